//! The Service in front of the proxy pods: port 80 for traffic (what an Ingress or Gateway
//! route points at) and the admin port for Prometheus to scrape `/metrics`.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{ADMIN_PORT, Names, SERVICE_PORT, meta, selector};
use crate::resolve::Resolved;

pub fn build(r: &Resolved, owner: &Option<OwnerReference>) -> Service {
    let port = |name: &str, port: i32, target: &str| ServicePort {
        name: Some(name.to_owned()),
        port,
        target_port: Some(IntOrString::String(target.to_owned())),
        protocol: Some("TCP".to_owned()),
        ..ServicePort::default()
    };
    Service {
        metadata: meta(r, &Names::new(&r.name).workload, owner),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_owned()),
            selector: Some(selector(&r.name)),
            ports: Some(vec![
                port("http", SERVICE_PORT, "http"),
                port("admin", ADMIN_PORT, "admin"),
            ]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// The in-cluster URL reported in the gateway's status.
pub fn endpoint(r: &Resolved) -> String {
    format!(
        "http://{}.{}.svc:{SERVICE_PORT}",
        Names::new(&r.name).workload,
        r.namespace
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builders::fixtures::resolved;
    use crate::tier::Tier;

    #[test]
    fn selects_the_proxy_pods_by_identity() {
        let svc = build(&resolved(Tier::Development), &None);
        let spec = svc.spec.unwrap();
        assert_eq!(spec.selector.unwrap(), selector("shop"));
        let ports = spec.ports.unwrap();
        assert_eq!(ports[0].port, 80);
        assert_eq!(
            ports[0].target_port,
            Some(IntOrString::String("http".into()))
        );
        assert_eq!(
            endpoint(&resolved(Tier::Staging)),
            "http://shop-vouchrs.shop.svc:80"
        );
    }
}
