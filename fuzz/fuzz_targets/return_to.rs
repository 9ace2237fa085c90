//! The return-URL (`rd`) validator and the sign-in redirect that carries it.
//!
//! Properties: whatever the input, the validated path resolves (WHATWG, as browsers do) on our
//! own origin; it is either the input unchanged or `/`; and the `rd` the sign-in redirect
//! writes decodes back to exactly the request's path and query.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vouchrs_fuzz::stays_on_site;
use vouchrs_proxy::web::redirect::ReturnTo;
use vouchrs_proxy::web::respond::sign_in_redirect;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let from_path = ReturnTo::from_path(text);
    assert!(
        stays_on_site(from_path.as_str()),
        "{text:?} -> {from_path:?}"
    );
    assert!(
        from_path.as_str() == text || from_path.as_str() == "/",
        "{text:?} was rewritten"
    );
    let from_query = ReturnTo::from_query_value(text);
    assert!(
        stays_on_site(from_query.as_str()),
        "{text:?} -> {from_query:?}"
    );

    // The gateway passes the request's path and query, which the URI parser already checked.
    let Ok(pq) = http::uri::PathAndQuery::try_from(text) else {
        return;
    };
    let response = sign_in_redirect("/auth", pq.as_str());
    let location = response.headers()[http::header::LOCATION]
        .to_str()
        .expect("an ASCII Location");
    assert!(stays_on_site(location), "{location:?}");
    let query = location
        .strip_prefix("/auth/sign_in?")
        .expect("the sign-in route");
    let rd: Vec<_> = form_urlencoded::parse(query.as_bytes())
        .filter(|(k, _)| k == "rd")
        .map(|(_, v)| v.into_owned())
        .collect();
    assert_eq!(
        rd,
        [pq.as_str()],
        "rd does not round-trip from {location:?}"
    );
    // And the sign-in route reads it back to the same place (or `/` when unsafe).
    let back = ReturnTo::from_path(&rd[0]);
    assert!(back.as_str() == pq.as_str() || back.as_str() == "/");
});
