use std::fs;

use wasp_model::{ObjectStore, validate::ValidationConfig};

use super::*;
use crate::batch::ErrorLog;

const WEB: &str =
    "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {ports: [{port: 80}]}\n";
const DB: &str =
    "apiVersion: v1\nkind: Service\nmetadata: {name: db}\nspec: {ports: [{port: 5432}]}\n";

struct Fixture {
    dir: tempfile::TempDir,
    src: FileSource,
    store: ObjectStore,
    log: ErrorLog,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let src = FileSource::new(dir.path());
        Self {
            dir,
            src,
            store: ObjectStore::new(ValidationConfig::default()),
            log: ErrorLog::default(),
        }
    }

    fn write(&self, name: &str, body: &str) {
        let p = self.dir.path().join(name);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, body).unwrap();
    }

    fn scan(&mut self) -> bool {
        let mut changed = false;
        for b in self.src.rescan().unwrap() {
            changed |= b.apply_to(&mut self.store, &mut self.log);
        }
        changed
    }

    fn services(&self) -> Vec<String> {
        self.store.services.keys().map(|k| k.name.clone()).collect()
    }

    fn port(&self, name: &str) -> i32 {
        let s = &self.store.services[&NamespacedName::new("default", name)].object;
        s.spec.as_ref().unwrap().ports.as_ref().unwrap()[0].port
    }
}

#[test]
fn add_change_delete_and_nested_dirs() {
    let mut f = Fixture::new();
    f.write("a.yaml", WEB);
    f.write("sub/dir/b.yml", DB);
    f.write(
        ".hidden.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: hidden}\nspec: {ports: [{port: 1}]}\n",
    );
    f.write("notes.txt", "not a manifest");
    assert!(f.scan());
    assert_eq!(f.services(), ["db", "web"]);
    assert!(!f.scan(), "nothing changed");
    f.write("a.yaml", &WEB.replace("80", "8080"));
    assert!(f.scan());
    assert_eq!(f.port("web"), 8080);
    fs::remove_file(f.dir.path().join("sub/dir/b.yml")).unwrap();
    assert!(f.scan());
    assert_eq!(f.services(), ["web"]);
}

#[test]
fn removing_a_document_deletes_its_object() {
    let mut f = Fixture::new();
    f.write("a.yaml", &format!("{WEB}---\n{DB}"));
    f.scan();
    f.write("a.yaml", WEB);
    f.scan();
    assert_eq!(f.services(), ["web"]);
}

#[test]
fn corrupt_file_keeps_last_good_and_recovers() {
    let mut f = Fixture::new();
    f.write("a.yaml", &format!("{WEB}---\n{DB}"));
    f.scan();
    f.write(
        "a.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: web\n",
    );
    f.scan();
    assert_eq!(
        f.services(),
        ["db", "web"],
        "a file that fails to parse keeps all its objects"
    );
    assert_eq!(f.log.len(), 1);
    f.write("a.yaml", WEB);
    f.scan();
    assert_eq!(f.services(), ["web"]);
    assert!(f.log.is_empty(), "the error clears once the file is fixed");
}

#[test]
fn invalid_object_keeps_its_last_good_version() {
    let mut f = Fixture::new();
    f.write("a.yaml", WEB);
    f.scan();
    f.write("a.yaml", &WEB.replace("80", "70000"));
    f.scan();
    assert_eq!(f.port("web"), 80);
    let e: Vec<String> = f.log.all().map(|e| e.to_string()).collect();
    assert!(e[0].ends_with("a.yaml: document 0: Service default/web: spec.ports[0].port: Invalid value: 70000: must be between 1 and 65535, inclusive"), "{e:?}");
    // A never-good object is never stored.
    f.write("b.yaml", &DB.replace("5432", "0"));
    f.scan();
    assert_eq!(f.services(), ["web"]);
}

#[test]
fn an_object_in_two_files_belongs_to_the_first_until_it_lets_go() {
    let mut f = Fixture::new();
    f.write("a.yaml", WEB);
    f.write("b.yaml", &WEB.replace("80", "81"));
    f.scan();
    assert_eq!(f.port("web"), 80);
    assert!(
        f.log
            .all()
            .any(|e| e.message.contains("already defined in"))
    );
    fs::remove_file(f.dir.path().join("a.yaml")).unwrap();
    f.scan();
    assert_eq!(f.port("web"), 81, "taken over from the other file");
    assert!(f.log.is_empty());
}

#[test]
fn atomic_rename_is_seen_as_a_change() {
    let mut f = Fixture::new();
    f.write("a.yaml", WEB);
    f.scan();
    f.write(".a.yaml.tmp", &WEB.replace("80", "90"));
    fs::rename(
        f.dir.path().join(".a.yaml.tmp"),
        f.dir.path().join("a.yaml"),
    )
    .unwrap();
    f.scan();
    assert_eq!(f.port("web"), 90);
}

#[test]
fn configmap_style_links_are_followed() {
    let mut f = Fixture::new();
    f.write("..2026_11_26/svc.yaml", WEB);
    std::os::unix::fs::symlink("..2026_11_26", f.dir.path().join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/svc.yaml", f.dir.path().join("svc.yaml")).unwrap();
    f.scan();
    assert_eq!(f.services(), ["web"]);
}
