//! `loadgen`: the load harness's fixed-rate HTTP/1.1 client (what wrk2 does; wrk2 is not in
//! Debian). Open loop: request `i` is due at `start + i / rate` whatever happened before, a
//! pacer thread releases the due requests, and each latency is measured from the moment the
//! request was *due*, so a stalled target cannot hide its queue (no coordinated omission).
//!
//! ```text
//! loadgen --url http://localhost:PORT/ --rate 5000 --duration 10 --connections 64 \
//!         [--header 'Cookie: a=b'] [--threads 1]
//! ```
//!
//! Prints one JSON object: requests, achieved rate, status code counts, transport errors and
//! latency percentiles in milliseconds. Only loopback targets are accepted: this is a benchmark
//! of processes on this machine, never a load test of someone else's server.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

/// Per-request limit; a request past it counts as a transport error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

struct Args {
    port: u16,
    host: String,
    path: String,
    rate: u64,
    duration: Duration,
    connections: usize,
    threads: usize,
    headers: Vec<(String, String)>,
}

fn usage(msg: &str) -> ! {
    eprintln!("loadgen: {msg}");
    eprintln!(
        "usage: loadgen --url http://localhost:PORT/PATH --rate N --duration SECS \
         --connections N [--threads N] [--header 'Name: value']..."
    );
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut it = std::env::args().skip(1);
    let (mut url, mut rate, mut duration, mut connections, mut threads) = (None, None, None, 64, 1);
    let mut headers = Vec::new();
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .unwrap_or_else(|| usage(&format!("{flag} needs a value")))
        };
        let number = |v: String| {
            v.parse::<f64>()
                .unwrap_or_else(|_| usage(&format!("{v}: not a number")))
        };
        match flag.as_str() {
            "--url" => url = Some(value()),
            "--rate" => rate = Some(number(value()) as u64),
            "--duration" => duration = Some(Duration::from_secs_f64(number(value()))),
            "--connections" => connections = number(value()) as usize,
            "--threads" => threads = number(value()) as usize,
            "--header" => {
                let v = value();
                let (name, val) = v
                    .split_once(':')
                    .unwrap_or_else(|| usage("--header wants 'Name: value'"));
                headers.push((name.trim().to_owned(), val.trim().to_owned()));
            }
            _ => usage(&format!("unknown flag {flag}")),
        }
    }
    let url = url.unwrap_or_else(|| usage("--url is required"));
    let rest = url
        .strip_prefix("http://")
        .unwrap_or_else(|| usage("only http:// URLs"));
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let (host, port) = authority
        .rsplit_once(':')
        .unwrap_or_else(|| usage("the URL needs a port"));
    if host != "localhost" && host != "127.0.0.1" {
        usage("only loopback targets (localhost, 127.0.0.1)");
    }
    Args {
        port: port.parse().unwrap_or_else(|_| usage("bad port")),
        host: authority.to_owned(),
        path: if path.is_empty() {
            "/".to_owned()
        } else {
            path.to_owned()
        },
        rate: rate
            .filter(|r| *r > 0)
            .unwrap_or_else(|| usage("--rate N (> 0) is required")),
        duration: duration.unwrap_or_else(|| usage("--duration is required")),
        connections: connections.max(1),
        threads: threads.max(1),
        headers,
    }
}

/// What one connection's task saw.
#[derive(Default)]
struct Tally {
    latencies_ns: Vec<u64>,
    codes: BTreeMap<u16, u64>,
    errors: u64,
}

struct Shared {
    args: Args,
    start: Instant,
    total: u64,
    next: AtomicU64,
    due: Semaphore,
}

impl Shared {
    fn due_at(&self, i: u64) -> Instant {
        self.start + Duration::from_nanos(i.saturating_mul(1_000_000_000) / self.args.rate)
    }
}

type Sender = http1::SendRequest<Empty<Bytes>>;

async fn connect(port: u16) -> Result<Sender, Box<dyn std::error::Error + Send + Sync>> {
    let stream = TcpStream::connect(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

async fn one_request(
    sender: &mut Sender,
    shared: &Shared,
) -> Result<u16, Box<dyn std::error::Error + Send + Sync>> {
    let mut req = Request::get(shared.args.path.as_str())
        .header(hyper::header::HOST, shared.args.host.as_str());
    for (name, value) in &shared.args.headers {
        req = req.header(name.as_str(), value.as_str());
    }
    sender.ready().await?;
    let response = sender.send_request(req.body(Empty::new())?).await?;
    let status = response.status().as_u16();
    response.into_body().collect().await?;
    Ok(status)
}

async fn worker(shared: Arc<Shared>) -> Tally {
    let mut tally = Tally::default();
    let mut sender: Option<Sender> = None;
    loop {
        let i = shared.next.fetch_add(1, Ordering::Relaxed);
        if i >= shared.total {
            return tally;
        }
        // Invariant: the semaphore is never closed.
        shared.due.acquire().await.expect("semaphore open").forget();
        let due = shared.due_at(i);
        let attempt = async {
            if sender.is_none() {
                sender = Some(connect(shared.args.port).await?);
            }
            // Invariant: set just above.
            one_request(sender.as_mut().expect("connected"), &shared).await
        };
        match tokio::time::timeout(REQUEST_TIMEOUT, attempt).await {
            Ok(Ok(status)) => {
                *tally.codes.entry(status).or_default() += 1;
                tally.latencies_ns.push(due.elapsed().as_nanos() as u64);
            }
            Ok(Err(_)) | Err(_) => {
                tally.errors += 1;
                sender = None; // reconnect for the next request
            }
        }
    }
}

/// Releases each request when it is due (std sleeps are finer than Tokio's 1 ms timer).
fn pace(shared: &Shared) {
    let mut released = 0u64;
    while released < shared.total {
        let elapsed = shared.start.elapsed();
        let due = ((elapsed.as_nanos() * u128::from(shared.args.rate)) / 1_000_000_000) as u64 + 1;
        let due = due.min(shared.total);
        if due > released {
            shared.due.add_permits((due - released) as usize);
            released = due;
        }
        std::thread::sleep(Duration::from_micros(100));
    }
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64 / 1e6
}

fn main() {
    let args = parse_args();
    let total = (args.rate as f64 * args.duration.as_secs_f64())
        .round()
        .max(1.0) as u64;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .enable_all()
        .build()
        .unwrap_or_else(|e| usage(&format!("runtime: {e}")));
    let shared = Arc::new(Shared {
        start: Instant::now() + Duration::from_millis(50), // let the connections' tasks start
        total,
        next: AtomicU64::new(0),
        due: Semaphore::new(0),
        args,
    });
    let workers: Vec<_> = (0..shared.args.connections)
        .map(|_| runtime.spawn(worker(shared.clone())))
        .collect();
    std::thread::sleep(shared.start.saturating_duration_since(Instant::now()));
    pace(&shared);
    let mut all = Tally::default();
    runtime.block_on(async {
        for w in workers {
            // Invariant: workers do not panic (errors are counted, not unwrapped).
            let t = w.await.expect("worker finished");
            all.latencies_ns.extend(t.latencies_ns);
            all.errors += t.errors;
            for (code, n) in t.codes {
                *all.codes.entry(code).or_default() += n;
            }
        }
    });
    let wall = shared.start.elapsed().as_secs_f64();
    all.latencies_ns.sort_unstable();
    let l = &all.latencies_ns;
    let report = serde_json::json!({
        "requests": total,
        "rate": shared.args.rate,
        "rps": l.len() as f64 / wall,
        "codes": all.codes.iter().map(|(c, n)| (c.to_string(), serde_json::Value::from(*n))).collect::<serde_json::Map<_, _>>(),
        "errors": all.errors,
        "p50_ms": percentile(l, 50.0),
        "p95_ms": percentile(l, 95.0),
        "p99_ms": percentile(l, 99.0),
        "p99.9_ms": percentile(l, 99.9),
        "max_ms": percentile(l, 100.0),
    });
    println!("{report}");
}
