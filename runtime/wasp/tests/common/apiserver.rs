//! A test Kubernetes API server that speaks the real wire protocol, for the one thing that
//! cannot run here: kube-apiserver.
//!
//! It serves Services, EndpointSlices and Nodes in the API's JSON form: lists with a
//! `resourceVersion`, paged by `limit` and `continue` as kube-apiserver pages them, and `watch=true` as a chunked stream of newline-delimited JSON events
//! (`ADDED`, `MODIFIED`, `DELETED`, `BOOKMARK` when asked for, and `ERROR` with a 410 Status
//! when the requested version is older than the compacted history). Label and field selectors
//! are honoured. The test can drop every watch mid-stream, compact the history, or take the
//! whole server down and bring it back on the same port.
//!
//! It runs on its own thread inside a network namespace (so the daemon in that namespace
//! reaches it on 127.0.0.1), and is driven in-process.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, watch};

/// The kinds served, with their list paths.
const KINDS: &[(&str, &str, &str, &str)] = &[
    ("Service", "v1", "/api/v1/services", "ServiceList"),
    (
        "EndpointSlice",
        "discovery.k8s.io/v1",
        "/apis/discovery.k8s.io/v1/endpointslices",
        "EndpointSliceList",
    ),
    ("Node", "v1", "/api/v1/nodes", "NodeList"),
];

#[derive(Clone, Debug)]
struct Ev {
    rv: u64,
    kind: String,
    ty: &'static str,
    obj: Value,
}

#[derive(Default)]
struct Inner {
    rv: u64,
    objects: BTreeMap<(String, String, String), Value>,
    log: Vec<Ev>,
    compacted: u64,
}

struct Shared {
    inner: Mutex<Inner>,
    events: broadcast::Sender<Ev>,
    /// Bumped to end every open watch.
    generation: watch::Sender<u64>,
    /// Whether the server accepts connections.
    up: watch::Sender<bool>,
}

/// The running server.
pub struct FakeApi {
    shared: Arc<Shared>,
    /// The port on 127.0.0.1 inside the namespace.
    pub port: u16,
}

fn key(obj: &Value) -> (String, String, String) {
    let s = |p: &str| {
        obj.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    (s("/kind"), s("/metadata/namespace"), s("/metadata/name"))
}

impl FakeApi {
    /// Starts the server inside network namespace `netns`.
    pub fn start_in(netns: &str) -> Self {
        let (events, _) = broadcast::channel(1024);
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner::default()),
            events,
            generation: watch::channel(0).0,
            up: watch::channel(true).0,
        });
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        let s = shared.clone();
        let path = format!("/run/netns/{netns}");
        std::thread::spawn(move || {
            let f = std::fs::File::open(&path).expect("open netns");
            nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(serve(s, port_tx));
        });
        let port = port_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("fake API server did not start");
        Self { shared, port }
    }

    /// A kubeconfig for the server.
    pub fn kubeconfig(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster: {{server: \"http://127.0.0.1:{}\"}}\nusers:\n- name: fake\n  user: {{}}\ncontexts:\n- name: fake\n  context: {{cluster: fake, user: fake}}\ncurrent-context: fake\n",
            self.port
        )
    }

    /// Creates or updates an object (ADDED or MODIFIED).
    pub fn apply(&self, mut obj: Value) {
        let mut g = self.shared.inner.lock().unwrap();
        g.rv += 1;
        let rv = g.rv;
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        let k = key(&obj);
        let ty = if g.objects.contains_key(&k) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        g.objects.insert(k.clone(), obj.clone());
        let ev = Ev {
            rv,
            kind: k.0,
            ty,
            obj,
        };
        g.log.push(ev.clone());
        let _ = self.shared.events.send(ev);
    }

    /// Deletes an object (DELETED).
    pub fn delete(&self, kind: &str, namespace: &str, name: &str) {
        let mut g = self.shared.inner.lock().unwrap();
        let Some(mut obj) = g
            .objects
            .remove(&(kind.into(), namespace.into(), name.into()))
        else {
            panic!("no {kind} {namespace}/{name}");
        };
        g.rv += 1;
        let rv = g.rv;
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        let ev = Ev {
            rv,
            kind: kind.into(),
            ty: "DELETED",
            obj,
        };
        g.log.push(ev.clone());
        let _ = self.shared.events.send(ev);
    }

    /// Forgets the event history: a watch from an older version gets 410 Gone.
    pub fn compact(&self) {
        let mut g = self.shared.inner.lock().unwrap();
        g.compacted = g.rv;
        g.log.clear();
    }

    /// Ends every open watch mid-stream.
    pub fn disconnect(&self) {
        self.shared.generation.send_modify(|g| *g += 1);
    }

    /// Takes the server down: no connections, every open one dropped.
    pub fn stop(&self) {
        let _ = self.shared.up.send(false);
        self.disconnect();
    }

    /// Brings the server back on the same port.
    pub fn restart(&self) {
        let _ = self.shared.up.send(true);
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn serve(s: Arc<Shared>, port_tx: std::sync::mpsc::Sender<u16>) {
    let mut port = 0;
    let mut up = s.up.subscribe();
    loop {
        while !*up.borrow_and_update() {
            if up.changed().await.is_err() {
                return;
            }
        }
        let listener = match TcpListener::bind(("127.0.0.1", port)).await {
            Ok(l) => l,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if port == 0 {
            port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
            let _ = port_tx.send(port);
        }
        let mut conns = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                _ = up.changed() => if !*up.borrow() { break },
                acc = listener.accept() => {
                    let Ok((stream, _)) = acc else { continue };
                    let s = s.clone();
                    conns.spawn(async move {
                        let svc = service_fn(move |req| handle(s.clone(), req));
                        let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
                    });
                }
            }
        }
        // Down: the listener closes and every connection is cut.
        conns.abort_all();
    }
}

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

fn full(status: StatusCode, v: &Value) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())).boxed());
    *r.status_mut() = status;
    r.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    r
}

pub fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let h = u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap_or(b'?');
                out.push(h);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Label selector terms: `k=v`, `k==v`, `k!=v`, `!k`, `k`.
pub fn labels_match(sel: &str, obj: &Value) -> bool {
    let labels = obj.pointer("/metadata/labels");
    let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
    sel.split(',').filter(|t| !t.is_empty()).all(|t| {
        if let Some(k) = t.strip_prefix('!') {
            get(k).is_none()
        } else if let Some((k, v)) = t.split_once("!=") {
            get(k) != Some(v)
        } else if let Some((k, v)) = t.split_once("==").or_else(|| t.split_once('=')) {
            get(k) == Some(v)
        } else {
            get(t).is_some()
        }
    })
}

pub fn fields_match(sel: &str, obj: &Value) -> bool {
    sel.split(',')
        .filter(|t| !t.is_empty())
        .all(|t| match t.split_once('=') {
            Some(("metadata.name", v)) => {
                obj.pointer("/metadata/name").and_then(Value::as_str) == Some(v)
            }
            Some(("metadata.namespace", v)) => {
                obj.pointer("/metadata/namespace").and_then(Value::as_str) == Some(v)
            }
            _ => true,
        })
}

/// A list's continue token (`limit` paging): the resourceVersion of its first page, so every
/// page and the watch after them stand at one version, and the last key served.
fn page_token(kind: &str, token: &str) -> Option<(u64, (String, String, String))> {
    let (rv, rest) = token.split_once('/')?;
    let (ns, name) = rest.split_once('/')?;
    Some((rv.parse().ok()?, (kind.into(), ns.into(), name.into())))
}

async fn handle(s: Arc<Shared>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_string();
    let query: BTreeMap<String, String> = req
        .uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .filter_map(|kv| kv.split_once('=').map(|(k, v)| (decode(k), decode(v))))
        .collect();
    let Some(&(kind, api_version, _, list_kind)) = KINDS.iter().find(|k| k.2 == path) else {
        let st = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": format!("{path} not found")});
        return Ok(full(StatusCode::NOT_FOUND, &st));
    };
    let labels = query.get("labelSelector").cloned().unwrap_or_default();
    let fields = query.get("fieldSelector").cloned().unwrap_or_default();
    let matches = move |o: &Value| labels_match(&labels, o) && fields_match(&fields, o);
    let watching = matches!(query.get("watch").map(String::as_str), Some("true" | "1"));
    if !watching {
        let g = s.inner.lock().unwrap();
        let limit = query.get("limit").and_then(|v| v.parse().ok());
        let (rv, after) = match query.get("continue").and_then(|t| page_token(kind, t)) {
            Some((rv, after)) => (rv, Some(after)),
            None => (g.rv, None),
        };
        let mut pending = g
            .objects
            .iter()
            .filter(|(k, o)| k.0 == kind && after.as_ref().is_none_or(|a| *k > a) && matches(o));
        let mut items = Vec::new();
        let mut next = None;
        for (k, o) in pending.by_ref() {
            items.push(o.clone());
            if limit == Some(items.len()) {
                next = Some(format!("{rv}/{}/{}", k.1, k.2));
                break;
            }
        }
        // The last page needs no token, as the API server omits it.
        if pending.next().is_none() {
            next = None;
        }
        let mut meta = json!({"resourceVersion": rv.to_string()});
        if let Some(t) = next {
            meta["continue"] = json!(t);
        }
        let list =
            json!({"kind": list_kind, "apiVersion": api_version, "metadata": meta, "items": items});
        return Ok(full(StatusCode::OK, &list));
    }
    let from: u64 = query
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let bookmarks = query.get("allowWatchBookmarks").map(String::as_str) == Some("true");
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|v| v.parse().ok())
        .unwrap_or(290u64);
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(256);
    let (backlog, mut live, gone) = {
        let g = s.inner.lock().unwrap();
        let live = s.events.subscribe();
        if from != 0 && from < g.compacted {
            (vec![], live, Some(g.compacted))
        } else if from == 0 {
            let now: Vec<Ev> = g
                .objects
                .iter()
                .filter(|(k, _)| k.0 == kind)
                .map(|(_, o)| Ev {
                    rv: g.rv,
                    kind: kind.into(),
                    ty: "ADDED",
                    obj: o.clone(),
                })
                .collect();
            (now, live, None)
        } else {
            (
                g.log
                    .iter()
                    .filter(|e| e.rv > from && e.kind == kind)
                    .cloned()
                    .collect(),
                live,
                None,
            )
        }
    };
    let mut generation = s.generation.subscribe();
    generation.borrow_and_update();
    let shared = s.clone();
    tokio::spawn(async move {
        let line = |v: Value| Bytes::from(format!("{v}\n"));
        if let Some(floor) = gone {
            let st = json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": format!("too old resource version: {from} ({floor})"), "reason": "Expired", "code": 410}});
            let _ = tx.send(line(st)).await;
            return;
        }
        for e in backlog.into_iter().filter(|e| matches(&e.obj)) {
            if tx
                .send(line(json!({"type": e.ty, "object": e.obj})))
                .await
                .is_err()
            {
                return;
            }
        }
        let deadline = tokio::time::sleep(Duration::from_secs(timeout));
        tokio::pin!(deadline);
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = &mut deadline => return,
                _ = generation.changed() => return,
                ev = live.recv() => match ev {
                    Ok(e) if e.kind == kind && matches(&e.obj) => {
                        if tx.send(line(json!({"type": e.ty, "object": e.obj}))).await.is_err() { return; }
                    }
                    Ok(_) => {}
                    Err(_) => return,
                },
                _ = tick.tick(), if bookmarks => {
                    let rv = shared.inner.lock().unwrap().rv;
                    let b = json!({"type": "BOOKMARK", "object": {"kind": kind, "apiVersion": api_version, "metadata": {"resourceVersion": rv.to_string()}}});
                    if tx.send(line(b)).await.is_err() { return; }
                }
            }
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
    });
    let mut r = Response::new(StreamBody::new(stream).boxed());
    r.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    Ok(r)
}
