//! The end-to-end harness: a real control plane (`hack/k8s/start.sh`: etcd + kube-apiserver
//! on 127.0.0.1), the CRDs and the operator's RBAC from `config/`, and the real
//! `vouchrs-operator run` binary authenticating as its ServiceAccount, so it has exactly the
//! permissions `config/rbac/` grants and nothing more.
//!
//! Every process is owned by a guard whose `Drop` stops it, so a failing assertion (a panic)
//! cleans up too. Should the test process itself die without unwinding (SIGKILL), a small
//! reaper shell notices and stops the control plane and any operator it left behind.
//!
//! Everything talks through `kubectl` (the binary built next to the API server) and reads
//! objects back as `k8s-openapi` types from `-o json`.

#![allow(dead_code)] // each test uses a different part of the harness

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde_json::Value;

pub const OPERATOR: &str = env!("CARGO_BIN_EXE_vouchrs-operator");
pub const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
pub const OPERATOR_NS: &str = "vouchrs-system";
pub const LEASE: &str = "vouchrs-operator";
pub const MANAGED: &str = "app.kubernetes.io/managed-by=vouchrs-operator";
/// Default bound of a wait for the operator to converge.
pub const CONVERGE: Duration = Duration::from_secs(45);

fn repo(path: &str) -> PathBuf {
    Path::new(REPO).join(path)
}

/// `hack/k8s/build.sh` once per test binary (it returns at once when the binaries are
/// cached; on a fresh machine it builds them, ~13 minutes). Returns the bin dir.
fn k8s_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let out = Command::new("bash")
            .arg(repo("hack/k8s/build.sh"))
            .stderr(Stdio::inherit())
            .output()
            .expect("running hack/k8s/build.sh");
        assert!(out.status.success(), "hack/k8s/build.sh failed");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let dir = PathBuf::from(
            stdout
                .lines()
                .last()
                .expect("build.sh printed nothing")
                .trim(),
        );
        assert!(
            dir.join("kubectl").is_file(),
            "no kubectl in {}",
            dir.display()
        );
        dir
    })
    .clone()
}

/// A running control plane with the CRDs and the operator's RBAC installed. Stopped on drop.
pub struct Cluster {
    /// start.sh's state dir: certificates, etcd data, logs, kubeconfigs, operator logs.
    pub dir: PathBuf,
    pub bin: PathBuf,
    admin_kubeconfig: PathBuf,
    operator_kubeconfig: PathBuf,
    reaper: Option<Child>,
    /// Every operator log so far, for failure messages.
    logs: Mutex<Vec<PathBuf>>,
    /// API servers started by `restart_apiserver`: stop.sh stops them, drop reaps them.
    restarted: Mutex<Vec<Child>>,
}

impl Cluster {
    /// Starts etcd + kube-apiserver, installs `crds/` (server-side apply), the operator's
    /// namespace and `config/rbac/`, and writes the operator's ServiceAccount kubeconfig.
    pub fn start() -> Cluster {
        let bin = k8s_bin();
        let started = Instant::now();
        let out = Command::new("bash")
            .arg(repo("hack/k8s/start.sh"))
            .env("VOUCHRS_K8S_BIN", &bin)
            .env_remove("VOUCHRS_K8S_DIR")
            .stdin(Stdio::null())
            .output()
            .expect("running hack/k8s/start.sh");
        assert!(
            out.status.success(),
            "hack/k8s/start.sh failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let env = parse_env(&String::from_utf8_lossy(&out.stdout));
        let dir = PathBuf::from(&env["VOUCHRS_K8S_DIR"]);
        let mut cluster = Cluster {
            admin_kubeconfig: PathBuf::from(&env["KUBECONFIG"]),
            operator_kubeconfig: dir.join("operator.kubeconfig"),
            dir,
            bin,
            reaper: None,
            logs: Mutex::default(),
            restarted: Mutex::default(),
        };
        cluster.reaper = Some(cluster.spawn_reaper());
        cluster.install();
        eprintln!(
            "e2e: control plane ready and configured in {:.1}s ({})",
            started.elapsed().as_secs_f64(),
            cluster.dir.display()
        );
        cluster
    }

    /// Stops the control plane and leftover operators if this process dies without
    /// unwinding. It ignores the signals a Ctrl-C or a test timeout sends to the group.
    fn spawn_reaper(&self) -> Child {
        let script = r#"
            trap '' INT TERM HUP
            while kill -0 "$1" 2>/dev/null; do sleep 1; done
            for p in $(cat "$2/operator.pids" 2>/dev/null); do
                grep -qa vouchrs-operator "/proc/$p/cmdline" 2>/dev/null && kill -9 "$p"
            done
            exec bash "$3" "$2"
        "#;
        Command::new("bash")
            .args(["-c", script, "reaper"])
            .arg(std::process::id().to_string())
            .arg(&self.dir)
            .arg(repo("hack/k8s/stop.sh"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawning the reaper")
    }

    fn install(&self) {
        self.kubectl_ok(&["apply", "--server-side", "-k", &path_str(&repo("crds"))]);
        self.kubectl_ok(&[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/vouchrsgateways.vouchrs.app",
        ]);
        self.kubectl_ok(&[
            "apply",
            "--server-side",
            "-f",
            &path_str(&repo("config/operator/namespace.yaml")),
        ]);
        self.kubectl_ok(&[
            "apply",
            "--server-side",
            "-k",
            &path_str(&repo("config/rbac")),
        ]);
        let out = Command::new("bash")
            .arg(repo("hack/k8s/sa-kubeconfig.sh"))
            .args([OPERATOR_NS, "vouchrs-operator"])
            .arg(&self.operator_kubeconfig)
            .env("KUBECONFIG", &self.admin_kubeconfig)
            .env("VOUCHRS_K8S_BIN", &self.bin)
            .output()
            .expect("running hack/k8s/sa-kubeconfig.sh");
        assert!(
            out.status.success(),
            "sa-kubeconfig.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // RBAC reaches the authorizer through an informer: wait until the grant is live.
        let sa = format!("--as=system:serviceaccount:{OPERATOR_NS}:vouchrs-operator");
        self.wait(
            "the operator's RBAC to take effect",
            Duration::from_secs(20),
            || {
                let out = self.kubectl(&["auth", "can-i", "watch", "vouchrsgateways", "-A", &sa]);
                out.status.success().then_some(())
            },
        );
    }

    /// Writes (and returns) a kubeconfig that authenticates as ServiceAccount `ns/name`, so
    /// a client has exactly the RBAC bound to it. Creates the ServiceAccount when missing.
    pub fn sa_kubeconfig(&self, ns: &str, name: &str) -> PathBuf {
        let path = self.dir.join(format!("sa-{ns}-{name}.kubeconfig"));
        let out = Command::new("bash")
            .arg(repo("hack/k8s/sa-kubeconfig.sh"))
            .args([ns, name])
            .arg(&path)
            .env("KUBECONFIG", &self.admin_kubeconfig)
            .env("VOUCHRS_K8S_BIN", &self.bin)
            .output()
            .expect("running hack/k8s/sa-kubeconfig.sh");
        assert!(
            out.status.success(),
            "sa-kubeconfig.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        path
    }

    /// Runs kubectl as the cluster admin.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_in(args, None)
    }

    /// Runs kubectl as the cluster admin with `stdin` piped in.
    pub fn kubectl_in(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut cmd = Command::new(self.bin.join("kubectl"));
        cmd.arg("--kubeconfig")
            .arg(&self.admin_kubeconfig)
            .arg("--cache-dir")
            .arg(self.dir.join("kubectl-cache"))
            .arg("--request-timeout=20s")
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawning kubectl");
        if let Some(input) = stdin {
            let mut pipe = child.stdin.take().unwrap();
            pipe.write_all(input.as_bytes()).unwrap();
        }
        child.wait_with_output().expect("waiting for kubectl")
    }

    /// Runs kubectl and returns its stdout; panics with its stderr if it failed.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        self.check(args, out)
    }

    /// `kubectl apply -f -` of `yaml`; panics if it failed.
    pub fn apply(&self, yaml: &str) -> String {
        let args = ["apply", "-f", "-"];
        let out = self.kubectl_in(&args, Some(yaml));
        self.check(&args, out)
    }

    fn check(&self, args: &[&str], out: Output) -> String {
        assert!(
            out.status.success(),
            "kubectl {} failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr),
            self.operator_logs()
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn create_namespace(&self, ns: &str) {
        self.kubectl_ok(&["create", "namespace", ns]);
    }

    /// The object, or `None` when it does not exist.
    pub fn get<K: DeserializeOwned>(&self, kind: &str, ns: &str, name: &str) -> Option<K> {
        let out = self.kubectl(&["get", kind, name, "-n", ns, "-o", "json"]);
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                stderr.contains("NotFound"),
                "kubectl get {kind} {ns}/{name}: {stderr}"
            );
            return None;
        }
        Some(serde_json::from_slice(&out.stdout).expect("kubectl printed invalid JSON"))
    }

    /// The object; panics when it does not exist.
    pub fn must_get<K: DeserializeOwned>(&self, kind: &str, ns: &str, name: &str) -> K {
        self.get(kind, ns, name)
            .unwrap_or_else(|| panic!("{kind} {ns}/{name} does not exist{}", self.operator_logs()))
    }

    /// `kubectl get ... -o json` items as raw JSON.
    pub fn list(&self, args: &[&str]) -> Vec<Value> {
        let mut all = vec!["get"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["-o", "json"]);
        let list: Value = serde_json::from_str(&self.kubectl_ok(&all)).unwrap();
        list["items"].as_array().cloned().unwrap_or_default()
    }

    /// Polls `f` every 200 ms until it returns `Some`, for at most `timeout`. The failure
    /// message names what was awaited and ends with the tail of every operator log.
    pub fn wait<T>(&self, what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(value) = f() {
                return value;
            }
            if Instant::now() >= deadline {
                panic!(
                    "timed out after {:.0}s waiting for {what}{}",
                    timeout.as_secs_f64(),
                    self.operator_logs()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The last lines of every operator log, for failure messages.
    pub fn operator_logs(&self) -> String {
        let logs = self.logs.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = String::new();
        for log in logs.iter() {
            let text = fs::read_to_string(log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(25)..];
            out.push_str(&format!(
                "\n---- last {} lines of {} ----\n{}",
                tail.len(),
                log.display(),
                tail.join("\n")
            ));
        }
        out
    }

    /// Starts `vouchrs-operator run` as the operator's ServiceAccount, identity `identity`.
    pub fn operator(&self, identity: &str) -> Operator {
        let log = self.dir.join(format!("operator-{identity}.log"));
        let file = fs::File::create(&log).unwrap();
        let child = Command::new(OPERATOR)
            .arg("run")
            .env("KUBECONFIG", &self.operator_kubeconfig)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env("POD_NAME", identity)
            .env("POD_NAMESPACE", OPERATOR_NS)
            .env("VOUCHRS_ADMIN_ADDR", "127.0.0.1:0")
            .env("RUST_LOG", "info,vouchrs_operator=debug")
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("spawning vouchrs-operator");
        let mut pids = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("operator.pids"))
            .unwrap();
        writeln!(pids, "{}", child.id()).unwrap();
        self.logs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(log.clone());
        Operator {
            child: Some(child),
            identity: identity.to_owned(),
            log,
        }
    }

    /// Kills kube-apiserver (SIGKILL: a crash, and no graceful drain to wait for), keeps it down for `down`, then starts it again with
    /// the very same command line and waits for `/readyz`. etcd keeps running, so every
    /// object survives; clients see refused connections and then broken watches.
    pub fn restart_apiserver(&self, down: Duration) {
        let pid_file = self.dir.join("kube-apiserver.pid");
        let pid = fs::read_to_string(&pid_file).unwrap().trim().to_owned();
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).expect("kube-apiserver is running");
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        assert!(
            Command::new("kill")
                .args(["-KILL", &pid])
                .status()
                .unwrap()
                .success()
        );
        self.wait("kube-apiserver to exit", Duration::from_secs(30), || {
            // Gone, or a zombie (a restarted API server is our child, reaped only on drop).
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let state = stat.rsplit(')').next().unwrap_or("").trim_start();
            (stat.is_empty() || state.starts_with('Z')).then_some(())
        });
        std::thread::sleep(down);
        let log = fs::OpenOptions::new()
            .append(true)
            .open(self.dir.join("kube-apiserver.log"))
            .unwrap();
        let child = Command::new(&args[0])
            .args(&args[1..])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("restarting kube-apiserver");
        // stop.sh stops whatever the pid file names.
        fs::write(&pid_file, child.id().to_string()).unwrap();
        self.restarted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(child);
        self.wait(
            "kube-apiserver to be ready again",
            Duration::from_secs(120),
            || {
                let out = self.kubectl(&["get", "--raw", "/readyz"]);
                out.status.success().then_some(())
            },
        );
    }

    /// When the leader Lease was last renewed, by whom.
    pub fn lease_renewal(&self) -> Option<(String, k8s_openapi::jiff::Timestamp)> {
        let lease: k8s_openapi::api::coordination::v1::Lease =
            self.get("lease", OPERATOR_NS, LEASE)?;
        let spec = lease.spec?;
        Some((spec.holder_identity?, spec.renew_time?.0))
    }

    /// Who holds the operator's leader Lease now.
    pub fn lease_holder(&self) -> Option<String> {
        let lease: k8s_openapi::api::coordination::v1::Lease =
            self.get("lease", OPERATOR_NS, LEASE)?;
        lease.spec?.holder_identity.filter(|h| !h.is_empty())
    }

    /// Waits until `identity` holds the Lease; returns how long that took.
    pub fn wait_for_leader(&self, identity: &str, timeout: Duration) -> Duration {
        let started = Instant::now();
        self.wait(&format!("{identity} to hold the Lease"), timeout, || {
            (self.lease_holder().as_deref() == Some(identity)).then_some(())
        });
        started.elapsed()
    }

    /// Sets a Deployment's status to fully available, as the controller-manager would once
    /// its pods are ready (there is none here). Returns the replica count used.
    pub fn make_available(&self, ns: &str, name: &str) -> i32 {
        let d: k8s_openapi::api::apps::v1::Deployment = self.must_get("deployment", ns, name);
        let replicas = d.spec.replicas.unwrap_or(1);
        let generation = d.metadata.generation.unwrap_or(1);
        let patch = serde_json::json!({ "status": {
            "observedGeneration": generation,
            "replicas": replicas,
            "updatedReplicas": replicas,
            "readyReplicas": replicas,
            "availableReplicas": replicas,
        }});
        self.kubectl_ok(&[
            "patch",
            "deployment",
            name,
            "-n",
            ns,
            "--subresource=status",
            "--type=merge",
            "-p",
            &patch.to_string(),
        ]);
        replicas
    }

    /// `kind/name -> resourceVersion` of every object in `namespaces` the operator manages
    /// (children and the key Secret) plus the gateways themselves.
    pub fn resource_versions(&self, namespaces: &[&str]) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for ns in namespaces {
            let managed = self.list(&[
                "deploy,svc,hpa,pdb,cm,secret,sa,role,rolebinding",
                "-n",
                ns,
                "-l",
                MANAGED,
            ]);
            let gateways = self.list(&["vouchrsgateways", "-n", ns]);
            for item in managed.iter().chain(&gateways) {
                out.insert(
                    format!(
                        "{}/{}/{}",
                        item["kind"].as_str().unwrap_or("?"),
                        ns,
                        item["metadata"]["name"].as_str().unwrap_or("?")
                    ),
                    item["metadata"]["resourceVersion"]
                        .as_str()
                        .unwrap_or("?")
                        .to_owned(),
                );
            }
        }
        out
    }

    /// Events about the gateway `name` in `ns`, as `(type, reason, note)`.
    pub fn events(&self, ns: &str, name: &str) -> Vec<(String, String, String)> {
        self.list(&[
            "events",
            "-n",
            ns,
            "--field-selector",
            &format!("involvedObject.name={name},involvedObject.kind=VouchrsGateway"),
        ])
        .iter()
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap_or_default().to_owned();
            (s("type"), s("reason"), s("message"))
        })
        .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let failed = std::thread::panicking();
        let mut stop = Command::new("bash");
        stop.arg(repo("hack/k8s/stop.sh")).arg(&self.dir);
        if failed {
            // Keep the logs of a failed test.
            stop.env("VOUCHRS_K8S_KEEP_DIR", "1");
            eprintln!(
                "e2e: test failed; control plane stopped, logs kept in {}",
                self.dir.display()
            );
        }
        let _ = stop.stdin(Stdio::null()).status();
        for mut child in self
            .restarted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(mut reaper) = self.reaper.take() {
            let _ = reaper.kill();
            let _ = reaper.wait();
        }
    }
}

/// One `vouchrs-operator run` process. Killed on drop.
pub struct Operator {
    child: Option<Child>,
    pub identity: String,
    pub log: PathBuf,
}

impl Operator {
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The admin address the operator bound (it logs it).
    pub fn admin_addr(&self) -> Option<String> {
        self.log_text()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| v["fields"]["message"] == "admin endpoints listening")
            .and_then(|v| v["fields"]["addr"].as_str().map(str::to_owned))
    }

    /// GET `path` from the admin port: the body, if it answered 200.
    pub fn admin_get(&self, path: &str) -> Option<String> {
        use std::io::Read;
        let addr = self.admin_addr()?;
        let mut stream = std::net::TcpStream::connect(&addr).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        let (head, body) = response.split_once("\r\n\r\n")?;
        head.starts_with("HTTP/1.1 200").then(|| body.to_owned())
    }

    /// A counter or gauge from `/metrics` (the first sample whose name and labels match).
    pub fn metric(&self, name: &str) -> Option<f64> {
        let text = self.admin_get("/metrics")?;
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    }

    /// Asks for a graceful stop (SIGTERM) and waits up to 20 s for the exit.
    pub fn terminate(&mut self) -> ExitStatus {
        let child = self.child.as_mut().expect("operator already stopped");
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "operator {} ignored SIGTERM for 20s; killed. Log:\n{}",
                    self.identity,
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGKILL: no clean shutdown, the Lease is not released.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
    }
}

fn parse_env(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.trim_matches('\'').to_owned()))
        .collect()
}

fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// The YAML of a sample gateway, with its namespace changed to `ns`.
pub fn sample_in(sample: &str, ns: &str) -> String {
    let text = fs::read_to_string(repo(&format!("config/samples/{sample}.yaml"))).unwrap();
    let mut value: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
    value["metadata"]["namespace"] = ns.into();
    serde_yaml_ng::to_string(&value).unwrap()
}

/// A sample's (namespace, name).
pub fn sample_id(sample: &str) -> (String, String) {
    let text = fs::read_to_string(repo(&format!("config/samples/{sample}.yaml"))).unwrap();
    let value: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
    let s = |k: &str| value["metadata"][k].as_str().unwrap().to_owned();
    (s("namespace"), s("name"))
}

pub fn repo_path(path: &str) -> String {
    path_str(&repo(path))
}
