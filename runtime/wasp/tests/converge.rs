//! Convergence on the real kernel, in every mode: an edit is resolved, planned and programmed
//! for the Services it can affect and no others (`wasp_services_resolved_total` counts them),
//! and traffic follows it.

mod common;

use common::{Node, is, modes, root_or_skip};

const VIP: &str = "10.96.0.70:80";
const SELECTED: &str = "10.96.0.71:80";
/// Services besides the two under test, each in its own file.
const OTHERS: u32 = 150;

fn web(ep: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: web}}\nspec: {{clusterIP: 10.96.0.70, ports: [{{port: 80}}]}}\n---\napiVersion: v1\nkind: Endpoints\nmetadata: {{name: web}}\nsubsets: [{{addresses: [{{ip: {ep}}}], ports: [{{port: 80}}]}}]\n"
    )
}

fn other(i: u32) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: other-{i}}}\nspec: {{clusterIP: 10.96.1.{}, ports: [{{port: 80}}]}}\n---\napiVersion: v1\nkind: Endpoints\nmetadata: {{name: other-{i}}}\nsubsets: [{{addresses: [{{ip: 10.244.9.{}}}], ports: [{{port: 80}}]}}]\n",
        i + 1,
        i + 1
    )
}

/// A Service selecting `app: picked`, and a hand-written Pod for pod b labelled `app`.
fn selected() -> String {
    "apiVersion: v1\nkind: Service\nmetadata: {name: picked}\nspec: {clusterIP: 10.96.0.71, selector: {app: picked}, ports: [{port: 80}]}\n".into()
}

fn pod(app: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: b, labels: {{app: {app}}}}}\nspec: {{nodeName: node-a, containers: [{{name: c, image: x}}]}}\nstatus: {{phase: Running, podIP: 10.244.7.3}}\n"
    )
}

fn resolved(n: &Node) -> f64 {
    n.metric("wasp_services_resolved_total").unwrap_or(-1.0)
}

/// Waits until the counter stops moving (the sync after the edit is done) and returns it.
fn settled(n: &Node) -> f64 {
    let mut last = resolved(n);
    for _ in 0..50 {
        std::thread::sleep(std::time::Duration::from_millis(100));
        let now = resolved(n);
        if now == last {
            return now;
        }
        last = now;
    }
    last
}

#[test]
fn an_edit_resolves_only_the_services_it_affects() {
    if !root_or_skip("converge") {
        return;
    }
    for (mode, backend) in modes() {
        let mut n = Node::new("converge", mode, backend);
        // Only partial syncs while the test runs: a full resync resolves everything.
        n.sync_period = "1h";
        n.pod("a", "10.244.7.2", &[80], &[]);
        n.pod("b", "10.244.7.3", &[80], &[]);
        n.tb.add_pod("client", "10.244.2.10").unwrap();
        for i in 0..OTHERS {
            n.write(&format!("other-{i}.yaml"), &other(i));
        }
        n.write("web.yaml", &web("10.244.7.2"));
        n.write("picked.yaml", &selected());
        n.write("pod-b.yaml", &pod("other"));
        n.start();
        n.eventually("initial", "client", "tcp", VIP, is(&["a"]));
        let start = settled(&n);
        assert!(
            start >= f64::from(OTHERS + 2),
            "the first sync resolves everything: {start}"
        );

        // An endpoint edit: one Service.
        n.write("web.yaml", &web("10.244.7.3"));
        n.eventually("the edit reaches traffic", "client", "tcp", VIP, is(&["b"]));
        let after_edit = settled(&n);
        assert_eq!(
            after_edit - start,
            1.0,
            "{mode}/{backend}: one Service resolved again"
        );

        // A Pod moving into a selector: the Services that select it, before or after.
        n.write("pod-b.yaml", &pod("picked"));
        n.eventually("the pod joins", "client", "tcp", SELECTED, is(&["b"]));
        let after_pod = settled(&n);
        assert_eq!(
            after_pod - after_edit,
            1.0,
            "{mode}/{backend}: only the selecting Service"
        );
        n.eventually("web is untouched", "client", "tcp", VIP, is(&["b"]));
    }
}
