//! A tiny in-memory API server behind a `tower-test` mock, for reconcile scenarios.
//!
//! It answers GET/POST/PUT/PATCH/DELETE on object paths from a map, records every call
//! (method, path, field manager, body), and keeps just enough server-side-apply bookkeeping
//! (`managedFields` with `spec.replicas`) to test the hand-over to an HPA. Scenarios then
//! assert on the exact conversation, as kube-rs `controller-rs` does.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

use crate::api::VouchrsGateway;

/// One request the operator made.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub method: Method,
    pub path: String,
    pub manager: Option<String>,
    pub body: Option<Value>,
}

impl Call {
    /// `"PATCH configmaps/shop-vouchrs-config"`: the method and the last two path segments.
    pub fn short(&self) -> String {
        let parts: Vec<&str> = self.path.rsplit('/').take(3).collect();
        let tail = if parts[0] == "status" {
            format!("{}/{}/status", parts[2], parts[1])
        } else {
            format!("{}/{}", parts[1], parts[0])
        };
        format!("{} {tail}", self.method)
    }

    pub fn is_write(&self) -> bool {
        self.method != Method::GET
    }
}

/// The fake server's objects (by path) and the calls it saw.
#[derive(Default)]
pub struct State {
    pub objects: BTreeMap<String, Value>,
    pub calls: Vec<Call>,
}

pub type Shared = Arc<Mutex<State>>;

/// A client talking to a fresh fake server holding `gw`, and the server's state.
pub fn start(gw: &VouchrsGateway) -> (Client, Shared) {
    let state = Shared::default();
    put_gateway(&state, gw);
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let server_state = state.clone();
    tokio::spawn(async move {
        while let Some((request, send)) = handle.next_request().await {
            let (status, body) = serve(&server_state, request).await;
            let response = Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(Body::from(serde_json::to_vec(&body).unwrap()))
                .unwrap();
            send.send_response(response);
        }
    });
    (Client::new(service, "default"), state)
}

/// Stores (or replaces) the gateway object itself.
pub fn put_gateway(state: &Shared, gw: &VouchrsGateway) {
    let path = format!(
        "/apis/vouchrs.app/v1alpha1/namespaces/{}/vouchrsgateways/{}",
        gw.namespace().unwrap(),
        gw.name_any()
    );
    state
        .lock()
        .unwrap()
        .objects
        .insert(path, serde_json::to_value(gw).unwrap());
}

/// The stored gateway (with whatever status the operator wrote).
pub fn gateway(state: &Shared, gw: &VouchrsGateway) -> VouchrsGateway {
    let path = format!(
        "/apis/vouchrs.app/v1alpha1/namespaces/{}/vouchrsgateways/{}",
        gw.namespace().unwrap(),
        gw.name_any()
    );
    serde_json::from_value(state.lock().unwrap().objects[&path].clone()).unwrap()
}

/// Takes the calls recorded so far.
pub fn take_calls(state: &Shared) -> Vec<Call> {
    std::mem::take(&mut state.lock().unwrap().calls)
}

pub fn object(state: &Shared, path_suffix: &str) -> Option<Value> {
    let state = state.lock().unwrap();
    state
        .objects
        .iter()
        .find(|(p, _)| p.ends_with(path_suffix))
        .map(|(_, v)| v.clone())
}

async fn serve(state: &Shared, request: Request<Body>) -> (StatusCode, Value) {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let manager = request.uri().query().and_then(|q| {
        q.split('&')
            .find_map(|kv| kv.strip_prefix("fieldManager="))
            .map(|m| m.replace("%2F", "/"))
    });
    let bytes = request.into_body().collect_bytes().await.unwrap();
    let body: Option<Value> = (!bytes.is_empty()).then(|| serde_json::from_slice(&bytes).unwrap());
    let mut state = state.lock().unwrap();
    state.calls.push(Call {
        method: method.clone(),
        path: path.clone(),
        manager: manager.clone(),
        body: body.clone(),
    });
    let not_found = || {
        (
            StatusCode::NOT_FOUND,
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "reason": "NotFound", "message": "not found", "code": 404}),
        )
    };
    match method {
        Method::GET => match state.objects.get(&path) {
            Some(v) => (StatusCode::OK, v.clone()),
            None => not_found(),
        },
        Method::POST => {
            let mut body = body.unwrap();
            let name = body["metadata"]["name"].as_str().unwrap().to_owned();
            let key = format!("{path}/{name}");
            if state.objects.contains_key(&key) {
                return (
                    StatusCode::CONFLICT,
                    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "reason": "AlreadyExists", "message": "exists", "code": 409}),
                );
            }
            body["metadata"]["resourceVersion"] = json!("1");
            state.objects.insert(key, body.clone());
            (StatusCode::CREATED, body)
        }
        Method::PUT => {
            let body = body.unwrap();
            state.objects.insert(path, body.clone());
            (StatusCode::OK, body)
        }
        Method::PATCH => {
            let body = body.unwrap();
            if let Some(object_path) = path.strip_suffix("/status") {
                let Some(object) = state.objects.get_mut(object_path) else {
                    return not_found();
                };
                object["status"] = body["status"].clone();
                return (StatusCode::OK, object.clone());
            }
            let mut object = state
                .objects
                .get(&path)
                .cloned()
                .unwrap_or_else(|| json!({}));
            merge(&mut object, &body);
            record_manager(&mut object, manager.as_deref().unwrap_or("?"), &body);
            state.objects.insert(path, object.clone());
            (StatusCode::OK, object)
        }
        Method::DELETE => match state.objects.remove(&path) {
            Some(v) => (StatusCode::OK, v),
            None => not_found(),
        },
        _ => (StatusCode::METHOD_NOT_ALLOWED, json!({})),
    }
}

/// JSON merge: objects recursively, anything else replaced. (Real SSA also removes fields a
/// manager stops applying; the scenarios do not depend on that.)
fn merge(into: &mut Value, from: &Value) {
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (slot, v) => *slot = v.clone(),
    }
}

/// Records which manager applied `spec.replicas`, the one ownership fact the operator reads.
fn record_manager(object: &mut Value, manager: &str, body: &Value) {
    let mut fields = json!({"f:metadata": {}});
    if body["spec"].get("replicas").is_some() {
        fields["f:spec"] = json!({"f:replicas": {}});
    }
    let entry = json!({"manager": manager, "operation": "Apply", "fieldsType": "FieldsV1", "fieldsV1": fields});
    let list = object["metadata"]["managedFields"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut list: Vec<Value> = list
        .into_iter()
        .filter(|e| e["manager"] != manager)
        .collect();
    list.push(entry);
    object["metadata"]["managedFields"] = Value::Array(list);
}
