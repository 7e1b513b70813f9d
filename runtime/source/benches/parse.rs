//! What reading a manifest file costs: 10,000 Services with 10 endpoints each in one file
//! (20,000 documents), through wasp's whole parse (split, serde-saphyr, identification,
//! strict decoding into the Kubernetes types), against what it did before (serde_yaml values
//! decoded into the same types, unknown fields ignored), in one run.
//!
//! `cargo bench -p wasp-source --bench parse` (WASP_BENCH_RUNS, default 5); `-- reread` for
//! only the files source's re-read of the file after one document changed.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Endpoints, Service};
use serde::Deserialize;
use std::path::Path;
use std::time::SystemTime;

use wasp_source::{FileSource, Limits, parse_manifests};

fn file(services: usize) -> String {
    let mut s = String::new();
    for i in 0..services {
        let eps: Vec<String> = (1..=10)
            .map(|e| format!("{{ip: 10.1.{}.{e}}}", i % 250))
            .collect();
        s.push_str(&format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: svc-{i}, namespace: default}}\nspec:\n  clusterIP: 10.96.{}.{}\n  ports: [{{port: 80, targetPort: 8080}}]\n---\napiVersion: v1\nkind: Endpoints\nmetadata: {{name: svc-{i}}}\nsubsets:\n- addresses: [{}]\n  ports: [{{port: 8080}}]\n---\n",
            i / 250,
            i % 250,
            eps.join(", ")
        ));
    }
    s
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let runs: usize = std::env::var("WASP_BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let text = file(10_000);
    if std::env::args().any(|a| a == "reread") {
        return reread(&text, runs);
    }
    let mb = text.len() as f64 / (1 << 20) as f64;
    let (mut wasp, mut yaml) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let t = Instant::now();
        let p = parse_manifests("bench.yaml", text.as_bytes(), &Limits::default());
        wasp.push(t.elapsed());
        assert_eq!((p.objects.len(), p.errors.len()), (20_000, 0));
        // What wasp did before: serde_yaml values, decoded into the same types (not strictly).
        let t = Instant::now();
        let mut n = 0;
        for d in serde_yaml::Deserializer::from_str(&text) {
            let v = serde_yaml::Value::deserialize(d).expect("valid");
            let kind = v
                .get("kind")
                .and_then(|k| k.as_str())
                .unwrap_or_default()
                .to_string();
            n += match kind.as_str() {
                "Service" => usize::from(serde_yaml::from_value::<Service>(v).is_ok()),
                "Endpoints" => usize::from(serde_yaml::from_value::<Endpoints>(v).is_ok()),
                _ => 0,
            };
        }
        yaml.push(t.elapsed());
        assert_eq!(n, 20_000, "serde_yaml decoded {n}");
    }
    let (w, y) = (median(wasp), median(yaml));
    println!(
        "10,000 Services x 10 endpoints in one file: {mb:.1} MiB, 20,000 documents, median of {runs}"
    );
    println!(
        "  wasp parse_manifests (split, serde-saphyr, strict decode): {:>8.1} ms  {:.1} MiB/s",
        w.as_secs_f64() * 1e3,
        mb / w.as_secs_f64()
    );
    println!(
        "  serde_yaml, decoded loosely (before):                      {:>8.1} ms  {:.1} MiB/s",
        y.as_secs_f64() * 1e3,
        mb / y.as_secs_f64()
    );
    println!("  ratio: {:.2}x", w.as_secs_f64() / y.as_secs_f64());
    reread(&text, runs);
}

/// What the files source does when one Endpoints of the file changed: the read after the
/// first, which decodes only the changed document.
fn reread(text: &str, runs: usize) {
    let path = Path::new("/bench/all.yaml");
    let mut source = FileSource::new("/bench");
    source.ingest(path, text.as_bytes(), SystemTime::UNIX_EPOCH);
    let edited = [
        text.replacen("{ip: 10.1.0.1}", "{ip: 10.1.0.99}", 1),
        text.to_owned(),
    ];
    let mut times = Vec::new();
    for i in 0..runs.max(2) * 4 {
        let t = Instant::now();
        let batch = source
            .ingest(path, edited[i % 2].as_bytes(), SystemTime::UNIX_EPOCH)
            .expect("the file changed");
        times.push(t.elapsed());
        assert_eq!((batch.applies.len(), batch.deletes.len()), (1, 0));
    }
    println!(
        "  files source, one Endpoints changed (FileSource::ingest): {:>8.2} ms, median of {}",
        median(times.clone()).as_secs_f64() * 1e3,
        times.len()
    );
}
