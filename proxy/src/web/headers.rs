//! Request and response header rules between client and upstream: hop-by-hop headers
//! (RFC 9110 §7.6.1), identity headers nobody but us may set, and `X-Forwarded-*` believed
//! only from trusted proxies.
//!
//! Header names arrive lowercased (HTTP/2 requires it, hyper does it for HTTP/1.1), so the only
//! spelling variant left to catch is `_` for `-`: `X_Auth_Request_User` reaches many
//! frameworks (CGI, WSGI, Rack, PHP) as the same variable as `X-Auth-Request-User`.

use std::net::IpAddr;

use http::header::{self, Entry, HeaderMap, HeaderName, HeaderValue};
use ipnet::IpNet;

use crate::config::IdentityHeaders;

/// Headers that describe one connection and never cross the proxy.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
];

/// Headers the client may only send through a trusted proxy. `X-Original-URL` and
/// `X-Rewrite-URL` override the request path in some frameworks (Symfony, IIS rewrite): from
/// anyone else they would turn a skip-auth path into any path, without a session.
const FORWARDING: [&str; 9] = [
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-real-ip",
    "x-original-url",
    "x-rewrite-url",
];

/// Decided once from the config.
#[derive(Debug, Clone)]
pub struct HeaderRules {
    pub user: HeaderName,
    pub email: HeaderName,
    pub groups: HeaderName,
    trusted_proxies: Vec<IpNet>,
    /// First bytes of every name a rule may drop: most browser headers are passed over after
    /// one table lookup instead of ~20 name comparisons.
    may_drop: [bool; 256],
}

/// The identity the upstream is told about, as ready-made header values.
#[derive(Debug, Clone)]
pub struct IdentityValues {
    pub user: HeaderValue,
    pub email: Option<HeaderValue>,
    pub groups: Option<HeaderValue>,
}

/// What the connection knows about the client, computed once per connection.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: IpAddr,
    pub addr_value: HeaderValue,
    pub trusted: bool,
    /// `http` or `https`: how the client reached us.
    pub scheme: &'static str,
}

impl HeaderRules {
    pub fn new(names: &IdentityHeaders, trusted_proxies: Vec<IpNet>) -> Self {
        // Invariant: HeaderNameText only holds lowercase letters, digits and `-`.
        let name = |n: &crate::config::HeaderNameText| {
            HeaderName::from_bytes(n.as_str().as_bytes()).expect("checked at load")
        };
        let (user, email, groups) = (name(&names.user), name(&names.email), name(&names.groups));
        let mut may_drop = [false; 256];
        let droppable = HOP_BY_HOP
            .iter()
            .chain(&FORWARDING)
            .copied()
            .chain(["transfer-encoding", "content-length"]);
        for n in droppable.chain([user.as_str(), email.as_str(), groups.as_str()]) {
            may_drop[usize::from(n.as_bytes()[0])] = true;
        }
        Self {
            user,
            email,
            groups,
            trusted_proxies,
            may_drop,
        }
    }

    pub fn peer(&self, addr: IpAddr, scheme: &'static str) -> Peer {
        let addr = addr.to_canonical();
        Peer {
            addr,
            // Invariant: an IP address prints as ASCII digits, dots, colons and hex.
            addr_value: HeaderValue::from_str(&addr.to_string()).expect("IP text"),
            trusted: self.trusted_proxies.iter().any(|net| net.contains(&addr)),
            scheme,
        }
    }

    /// Readies client request headers for the upstream, in place: drops hop-by-hop headers,
    /// every variant of our identity headers, untrusted forwarding headers; then adds the
    /// identity (if any) and `X-Forwarded-For/Proto/Host`.
    pub fn prepare_request(
        &self,
        headers: &mut HeaderMap,
        peer: &Peer,
        identity: Option<&IdentityValues>,
    ) {
        // In place: hyper's map has room for our few headers, and a browser request usually
        // loses only `Connection`; copying every header into a new map measured slower.
        let listed = connection_listed(headers);
        remove_where(headers, |name| self.drops(name, peer, &listed));

        if let Some(id) = identity {
            headers.insert(self.user.clone(), id.user.clone());
            if let Some(email) = &id.email {
                headers.insert(self.email.clone(), email.clone());
            }
            if let Some(groups) = &id.groups {
                headers.insert(self.groups.clone(), groups.clone());
            }
        }

        self.add_forwarding(headers, peer);
    }

    fn add_forwarding(&self, headers: &mut HeaderMap, peer: &Peer) {
        const XFF: HeaderName = HeaderName::from_static("x-forwarded-for");
        const XFP: HeaderName = HeaderName::from_static("x-forwarded-proto");
        const XFH: HeaderName = HeaderName::from_static("x-forwarded-host");
        // A trusted proxy's list is extended; anyone else's was removed above.
        let prior = peer.trusted.then(|| headers.get(&XFF)).flatten();
        let chain = match prior.and_then(|v| v.to_str().ok()) {
            Some(prior) => HeaderValue::from_str(&format!("{prior}, {}", peer.addr)).ok(),
            None => None,
        };
        headers.insert(XFF, chain.unwrap_or_else(|| peer.addr_value.clone()));
        // One lookup each: `entry` finds the slot it fills.
        headers
            .entry(XFP)
            .or_insert_with(|| HeaderValue::from_static(peer.scheme));
        let host = headers.get(header::HOST).cloned();
        if let (Entry::Vacant(slot), Some(host)) = (headers.entry(XFH), host) {
            slot.insert(host);
        }
    }

    /// Whether a client header must not reach the upstream.
    fn drops(&self, name: &HeaderName, peer: &Peer, listed: &[HeaderName]) -> bool {
        let n = name.as_str();
        let by_rule = self.may_drop[usize::from(n.as_bytes()[0])]
            && (is_hop_by_hop(n)
                || is_framing_look_alike(n)
                || self.is_identity(n)
                || (!peer.trusted && FORWARDING.iter().any(|f| eq_dash_underscore(n, f))));
        by_rule || listed.contains(name)
    }

    fn is_identity(&self, name: &str) -> bool {
        [&self.user, &self.email, &self.groups]
            .iter()
            .any(|ours| eq_dash_underscore(name, ours.as_str()))
    }
}

/// Drops hop-by-hop headers from an upstream response (a `101` keeps its `Upgrade`).
pub fn prepare_response(headers: &mut HeaderMap, switching_protocols: bool) {
    remove_where(headers, |name| {
        let n = name.as_str();
        is_hop_by_hop(n) && !(switching_protocols && (n == "upgrade" || n == "connection"))
    });
}

/// Removes every header whose name `doomed` picks, in one scan of the map.
fn remove_where(headers: &mut HeaderMap, mut doomed: impl FnMut(&HeaderName) -> bool) {
    // `remove` moves the last entry into the freed slot, so the scan resumes at that slot.
    let mut from = 0;
    while let Some((i, name)) = headers
        .keys()
        .enumerate()
        .skip(from)
        .find(|(_, name)| doomed(name))
    {
        let name = name.clone();
        headers.remove(&name);
        from = i;
    }
}

/// Headers the client named in `Connection`: hop-by-hop too (only meaningful for HTTP/1.1).
/// Empty, without allocating, for the usual `keep-alive`, `close` or `upgrade`.
fn connection_listed(headers: &HeaderMap) -> Vec<HeaderName> {
    let mut listed = Vec::new();
    for value in headers.get_all(header::CONNECTION) {
        for token in value.to_str().unwrap_or("").split(',') {
            let token = token.trim();
            // Checked before parsing: `keep-alive` is no standard name, so parsing allocates.
            let usual = ["close", "keep-alive", "upgrade"];
            if usual.iter().any(|u| token.eq_ignore_ascii_case(u)) {
                continue;
            }
            if let Ok(name) = HeaderName::from_bytes(token.as_bytes()) {
                listed.push(name);
            }
        }
    }
    listed
}

fn is_hop_by_hop(name: &str) -> bool {
    // `transfer-encoding` is framing: hyper sets it for each side itself.
    name == "transfer-encoding" || HOP_BY_HOP.iter().any(|h| eq_dash_underscore(name, h))
}

/// `transfer_encoding` or `content_length`: no client needs them, and a server that reads `_`
/// as `-` would frame the body differently from us (request smuggling). Found by the
/// `request_headers` fuzz target (issue 8).
fn is_framing_look_alike(name: &str) -> bool {
    name.contains('_')
        && (eq_dash_underscore(name, "transfer-encoding")
            || eq_dash_underscore(name, "content-length"))
}

/// Compares a lowercase header name with one of ours, treating `_` as `-`.
fn eq_dash_underscore(name: &str, ours: &str) -> bool {
    name.len() == ours.len()
        && name
            .bytes()
            .zip(ours.bytes())
            .all(|(a, b)| a == b || (a == b'_' && b == b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(trusted: &[&str]) -> HeaderRules {
        HeaderRules::new(
            &IdentityHeaders::default(),
            trusted.iter().map(|t| t.parse().unwrap()).collect(),
        )
    }

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn identity() -> IdentityValues {
        IdentityValues {
            user: HeaderValue::from_static("alice"),
            email: Some(HeaderValue::from_static("alice@example.com")),
            groups: None,
        }
    }

    #[test]
    fn spoofed_identity_headers_are_stripped_in_every_spelling() {
        let r = rules(&[]);
        let mut h = map(&[
            ("x-auth-request-user", "mallory"),
            ("X_Auth_Request_User", "mallory"),
            ("x-auth-request-email", "m@evil"),
            ("x-auth-request-email", "m2@evil"),
            ("x_auth_request_groups", "admin"),
            ("accept", "text/html"),
        ]);
        let peer = r.peer("192.0.2.1".parse().unwrap(), "https");
        r.prepare_request(&mut h, &peer, Some(&identity()));
        assert_eq!(
            h.get_all("x-auth-request-user").iter().collect::<Vec<_>>(),
            ["alice"]
        );
        assert_eq!(
            h.get_all("x-auth-request-email").iter().collect::<Vec<_>>(),
            ["alice@example.com"]
        );
        assert!(!h.keys().any(|k| k.as_str().contains('_')));
        assert!(h.get("x-auth-request-groups").is_none());
        assert_eq!(h["accept"], "text/html");
    }

    #[test]
    fn forwarding_headers_from_strangers_are_replaced() {
        let r = rules(&["10.0.0.0/8"]);
        let mut h = map(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("x_forwarded_for", "5.6.7.8"),
            ("x-forwarded-proto", "https"),
            ("forwarded", "for=1.2.3.4"),
            ("x-real-ip", "1.2.3.4"),
            ("x-original-url", "/admin"),
            ("x_rewrite_url", "/admin"),
            ("host", "app.example.com"),
        ]);
        r.prepare_request(&mut h, &r.peer("192.0.2.7".parse().unwrap(), "http"), None);
        assert_eq!(h["x-forwarded-for"], "192.0.2.7");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "app.example.com");
        assert!(h.get("forwarded").is_none() && h.get("x-real-ip").is_none());
        // Path overrides some frameworks honour would bypass skip-auth rules (issue 8).
        assert!(h.get("x-original-url").is_none() && h.get("x_rewrite_url").is_none());
    }

    #[test]
    fn framing_look_alikes_never_reach_the_upstream() {
        // Regression for the request_headers fuzz target: `transfer_encoding` went upstream.
        let r = rules(&["0.0.0.0/0"]);
        let mut h = map(&[
            ("transfer_encoding", "chunked"),
            ("content_length", "3"),
            ("content-length", "5"),
            ("x-content_length", "1"),
        ]);
        r.prepare_request(&mut h, &r.peer("192.0.2.7".parse().unwrap(), "http"), None);
        assert!(h.get("transfer_encoding").is_none() && h.get("content_length").is_none());
        assert_eq!(h["content-length"], "5", "the real length stays");
        assert_eq!(h["x-content_length"], "1", "other names stay");
    }

    #[test]
    fn forwarding_headers_from_trusted_proxies_are_extended() {
        let r = rules(&["10.0.0.0/8"]);
        let mut h = map(&[
            ("x-forwarded-for", "203.0.113.9"),
            ("x-forwarded-proto", "https"),
        ]);
        r.prepare_request(&mut h, &r.peer("10.1.2.3".parse().unwrap(), "http"), None);
        assert_eq!(h["x-forwarded-for"], "203.0.113.9, 10.1.2.3");
        assert_eq!(h["x-forwarded-proto"], "https");
    }

    #[test]
    fn hop_by_hop_and_connection_listed_headers_go() {
        let r = rules(&[]);
        let mut h = map(&[
            ("connection", "keep-alive, x-secret"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "gzip"),
            ("upgrade", "h2c"),
            ("proxy-authorization", "Basic eA=="),
            ("transfer-encoding", "chunked"),
            ("x-kept", "1"),
        ]);
        r.prepare_request(
            &mut h,
            &r.peer("::ffff:127.0.0.1".parse().unwrap(), "http"),
            None,
        );
        let names: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["x-kept", "x-forwarded-for", "x-forwarded-proto"]);
        assert_eq!(
            h["x-forwarded-for"], "127.0.0.1",
            "mapped IPv4 printed canonically"
        );
    }

    #[test]
    fn every_dropped_header_goes_however_they_interleave() {
        // Removal moves the last entry into the freed slot; the scan must still see it.
        let r = rules(&[]);
        let mut h = map(&[
            ("te", "trailers"),
            ("a", "1"),
            ("x_auth_request_user", "m"),
            ("b", "1"),
            ("b", "2"),
            ("x-real-ip", "1.2.3.4"),
            ("c", "1"),
            ("connection", "Keep-Alive, X-Listed, close"),
            ("x-listed", "1"),
            ("forwarded", "for=x"),
            ("c", "2"),
        ]);
        r.prepare_request(&mut h, &r.peer("192.0.2.1".parse().unwrap(), "http"), None);
        let mut names: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            ["a", "b", "c", "x-forwarded-for", "x-forwarded-proto"]
        );
        let values = |n: &str| h.get_all(n).iter().cloned().collect::<Vec<_>>();
        assert_eq!(
            values("b"),
            ["1", "2"],
            "values of one name keep their order"
        );
        assert_eq!(values("c"), ["1", "2"]);
    }

    #[test]
    fn a_trusted_proxy_keeps_its_forwarded_proto_and_host() {
        let r = rules(&["10.0.0.0/8"]);
        let mut h = map(&[
            ("host", "internal:8080"),
            ("x-forwarded-for", "203.0.113.9"),
            ("x-forwarded-for", "198.51.100.1"),
            ("x-forwarded-host", "app.example.com"),
            ("x-forwarded-proto", "https"),
        ]);
        r.prepare_request(&mut h, &r.peer("10.1.2.3".parse().unwrap(), "http"), None);
        // The first list is extended and replaces the others, as before.
        let xff: Vec<_> = h.get_all("x-forwarded-for").iter().collect();
        assert_eq!(xff, ["203.0.113.9, 10.1.2.3"]);
        assert_eq!(h["x-forwarded-host"], "app.example.com");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h.len(), 4);
    }

    #[test]
    fn a_host_named_in_connection_is_not_forwarded_as_x_forwarded_host() {
        let r = rules(&[]);
        let mut h = map(&[("connection", "host"), ("host", "app.example.com")]);
        r.prepare_request(&mut h, &r.peer("192.0.2.1".parse().unwrap(), "http"), None);
        assert!(h.get("host").is_none() && h.get("x-forwarded-host").is_none());
    }

    #[test]
    fn usual_connection_tokens_name_nothing() {
        let h = map(&[("connection", "Keep-Alive, CLOSE , upgrade,,")]);
        assert!(connection_listed(&h).is_empty());
        let h = map(&[("connection", "keep-alive, X-Secret, bad name")]);
        assert_eq!(connection_listed(&h), ["x-secret"]);
    }

    #[test]
    fn responses_lose_hop_by_hop_but_101_keeps_upgrade() {
        let mut h = map(&[
            ("connection", "upgrade"),
            ("upgrade", "websocket"),
            ("set-cookie", "a=1"),
            ("set-cookie", "b=2"),
        ]);
        prepare_response(&mut h, true);
        assert_eq!(h.len(), 4);
        prepare_response(&mut h, false);
        assert_eq!(h.get_all("set-cookie").iter().count(), 2);
        assert_eq!(h.len(), 2);
    }
}
