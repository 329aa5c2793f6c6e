//! A webhook receiver on 127.0.0.1:0 that records every request (path, headers, raw body,
//! arrival time) and answers per path with a programmable behaviour: a sequence of replies, then
//! a default reply, each with a status, headers and an optional delay before answering.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// One answer of the receiver.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// Wait this long before answering (the request is recorded on arrival).
    pub delay: Duration,
}

impl Reply {
    pub fn status(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: format!("status {status}"),
            delay: Duration::ZERO,
        }
    }
    pub fn ok() -> Reply {
        Reply::status(200)
    }
    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }
    pub fn delay(mut self, d: Duration) -> Reply {
        self.delay = d;
        self
    }
}

/// A request as it arrived.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    /// Names lowercased, in arrival order (a name may repeat).
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    pub at: Instant,
    pub wall: SystemTime,
}

impl Recorded {
    /// The first value of a header (name case-insensitive).
    pub fn header(&self, name: &str) -> Option<String> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.clone())
    }

    /// How many times a header appears.
    pub fn header_count(&self, name: &str) -> usize {
        let name = name.to_ascii_lowercase();
        self.headers.iter().filter(|(n, _)| *n == name).count()
    }

    /// `webhook-id` (the delivery uuid), or "" when missing.
    pub fn webhook_id(&self) -> String {
        self.header("webhook-id").unwrap_or_default()
    }

    /// Checks both signatures with the receiver's own code (crate::signature).
    pub fn verify(&self, secret: &str) -> Result<(), String> {
        crate::signature::verify(secret, &self.body, |n| self.header(n))
    }

    /// The body parsed as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.body))
    }
}

#[derive(Default)]
struct Behaviour {
    sequence: VecDeque<Reply>,
    default: Option<Reply>,
    /// The first n requests of each delivery (`webhook-id`) get this reply, before the others.
    per_delivery: Option<(usize, Reply)>,
}

#[derive(Default)]
struct State {
    requests: Vec<Recorded>,
    behaviours: HashMap<String, Behaviour>,
    /// per path: requests whose body contains the text get the reply, before any other rule
    body_rules: HashMap<String, Vec<(String, Reply)>>,
    /// requests being answered now, and the most ever at once, per path
    open: HashMap<String, usize>,
    max_open: HashMap<String, usize>,
}

/// The HTTP receiver; stops serving when dropped.
pub struct Receiver {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: JoinHandle<()>,
}

impl Receiver {
    /// Starts serving on 127.0.0.1 on a free port. Unprogrammed paths answer 200.
    pub async fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver on 127.0.0.1:0");
        let addr = listener.local_addr().expect("receiver address");
        let state = Arc::new(Mutex::new(State::default()));
        let st = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let st = st.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| handle(st.clone(), req));
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Receiver { addr, state, task }
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Answers the first `n` requests of each delivery (same `webhook-id`) to `path` with
    /// `first`, and every later one with `then`.
    pub fn per_delivery(&self, path: &str, n: usize, first: Reply, then: Reply) {
        self.state.lock().unwrap().behaviours.insert(
            path.to_owned(),
            Behaviour {
                sequence: VecDeque::new(),
                default: Some(then),
                per_delivery: Some((n, first)),
            },
        );
    }

    /// Answers requests to `path` with `sequence` in order, then with `default` forever.
    pub fn program(&self, path: &str, sequence: Vec<Reply>, default: Reply) {
        let mut st = self.state.lock().unwrap();
        st.behaviours.insert(
            path.to_owned(),
            Behaviour {
                sequence: sequence.into(),
                default: Some(default),
                per_delivery: None,
            },
        );
    }

    /// Answers every request to `path` with `reply`.
    pub fn always(&self, path: &str, reply: Reply) {
        self.program(path, Vec::new(), reply);
    }

    /// Answers requests to `path` whose body contains `needle` with `reply`, before any other
    /// rule of the path; `None` removes the path's body rules.
    pub fn when_body_contains(&self, path: &str, rule: Option<(&str, Reply)>) {
        let mut st = self.state.lock().unwrap();
        let rules = st.body_rules.entry(path.to_owned()).or_default();
        match rule {
            Some((needle, reply)) => rules.push((needle.to_owned(), reply)),
            None => rules.clear(),
        }
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().requests.clone()
    }

    /// The requests to `path`.
    pub fn requests_to(&self, path: &str) -> Vec<Recorded> {
        self.state
            .lock()
            .unwrap()
            .requests
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    /// How many requests so far.
    pub fn count(&self) -> usize {
        self.state.lock().unwrap().requests.len()
    }

    /// The most requests to `path` that were being answered at the same time.
    pub fn max_concurrent(&self, path: &str) -> usize {
        let st = self.state.lock().unwrap();
        st.max_open.get(path).copied().unwrap_or(0)
    }

    /// Requests per `webhook-id`.
    pub fn counts_by_webhook_id(&self) -> HashMap<String, usize> {
        let mut m = HashMap::new();
        for r in self.state.lock().unwrap().requests.iter() {
            *m.entry(r.webhook_id()).or_insert(0) += 1;
        }
        m
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(
    state: Arc<Mutex<State>>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let path = parts.uri.path().to_owned();
    let headers = parts
        .headers
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_ascii_lowercase(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let reply = {
        let mut st = state.lock().unwrap();
        st.requests.push(Recorded {
            method: parts.method.to_string(),
            path: path.clone(),
            headers,
            body,
            at: Instant::now(),
            wall: SystemTime::now(),
        });
        let open = st.open.entry(path.clone()).or_insert(0);
        *open += 1;
        let now_open = *open;
        let max = st.max_open.entry(path.clone()).or_insert(0);
        *max = (*max).max(now_open);
        let last = st.requests.last();
        let seen = last.map_or(0, |r| {
            let id = r.header("webhook-id");
            st.requests
                .iter()
                .filter(|x| x.path == path && x.header("webhook-id") == id)
                .count()
        });
        let by_body = st.body_rules.get(&path).and_then(|rules| {
            let body = last.map_or(&[][..], |r| &r.body[..]);
            rules
                .iter()
                .find(|(needle, _)| body.windows(needle.len()).any(|w| w == needle.as_bytes()))
                .map(|(_, reply)| reply.clone())
        });
        match (by_body, st.behaviours.get_mut(&path)) {
            (Some(reply), _) => reply,
            (None, Some(b)) => match &b.per_delivery {
                Some((n, first)) if seen <= *n => first.clone(),
                _ => b
                    .sequence
                    .pop_front()
                    .or_else(|| b.default.clone())
                    .unwrap_or_else(Reply::ok),
            },
            (None, None) => Reply::ok(),
        }
    };
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    if let Some(open) = state.lock().unwrap().open.get_mut(&path) {
        *open -= 1;
    }
    let mut resp = Response::new(Full::new(Bytes::from(reply.body)));
    *resp.status_mut() =
        StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    for (n, v) in reply.headers {
        if let (Ok(n), Ok(v)) = (
            hyper::header::HeaderName::from_bytes(n.as_bytes()),
            hyper::header::HeaderValue::from_str(&v),
        ) {
            resp.headers_mut().append(n, v);
        }
    }
    Ok(resp)
}
