use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use wasp_resolve::{ObjectStore, validate::ValidationConfig};

use super::*;
use crate::batch::ErrorLog;
use crate::files::Limits;

mod one_file;

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
        self.store
            .services
            .keys()
            .map(|k| k.name.to_string())
            .collect()
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

#[test]
fn a_document_that_cannot_be_identified_keeps_every_object_of_its_file() {
    let mut f = Fixture::new();
    f.write("a.yaml", &format!("{WEB}---\n{DB}"));
    f.scan();
    // The kind went missing, the name became a number: either could be web or db.
    f.write(
        "a.yaml",
        &format!("{}---\n{DB}", WEB.replace("kind: Service\n", "")),
    );
    f.scan();
    assert_eq!(f.services(), ["db", "web"]);
    assert_eq!(f.log.len(), 1);
    f.write(
        "a.yaml",
        &format!("{}---\n{DB}", WEB.replace("{name: web}", "{name: 5}")),
    );
    f.scan();
    assert_eq!(f.services(), ["db", "web"]);
    // A typo in the kind is a typo, not a kind to skip.
    f.write(
        "a.yaml",
        &format!("{}---\n{DB}", WEB.replace("kind: Service", "kind: Servce")),
    );
    f.scan();
    assert_eq!(f.services(), ["db", "web"]);
    let e: Vec<String> = f.log.all().map(|e| e.to_string()).collect();
    assert!(e[0].contains("no matches for kind \"Servce\""), "{e:?}");
    // Once the file is readable again, what it no longer holds goes.
    f.write("a.yaml", DB);
    f.scan();
    assert_eq!(f.services(), ["db"]);
    assert!(f.log.is_empty());
}

#[test]
fn a_file_over_the_size_limit_keeps_its_objects_and_says_which_limit() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits {
        file_bytes: 200,
        ..Limits::default()
    };
    let mut src = FileSource::with_limits(dir.path(), limits);
    let (mut store, mut log) = (
        ObjectStore::new(ValidationConfig::default()),
        ErrorLog::default(),
    );
    fs::write(dir.path().join("a.yaml"), WEB).unwrap();
    for b in src.rescan().unwrap() {
        b.apply_to(&mut store, &mut log);
    }
    fs::write(
        dir.path().join("a.yaml"),
        format!("{WEB}# {}\n", "x".repeat(300)),
    )
    .unwrap();
    for b in src.rescan().unwrap() {
        b.apply_to(&mut store, &mut log);
    }
    assert_eq!(store.services.len(), 1);
    let e: Vec<String> = log.all().map(|e| e.to_string()).collect();
    assert!(
        e[0].contains("more than the limit of 200 (limits.fileBytes)"),
        "{e:?}"
    );
}

#[test]
fn a_link_loop_is_followed_once() {
    let mut f = Fixture::new();
    f.write("a.yaml", WEB);
    f.write("sub/b.yaml", DB);
    std::os::unix::fs::symlink(".", f.dir.path().join("loop")).unwrap();
    std::os::unix::fs::symlink("..", f.dir.path().join("sub/up")).unwrap();
    f.scan();
    assert_eq!(f.services(), ["db", "web"]);
    assert!(f.log.is_empty(), "{:?}", f.log.all().collect::<Vec<_>>());
}

#[test]
fn an_unreadable_subdirectory_is_an_error_and_the_rest_keeps_working() {
    use std::os::unix::fs::PermissionsExt;
    let mut f = Fixture::new();
    f.write("a.yaml", WEB);
    f.write("sub/b.yaml", DB);
    fs::set_permissions(f.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(f.dir.path().join("sub"), fs::Permissions::from_mode(0o000)).unwrap();
    // Root reads through any mode: drop this thread's filesystem capabilities instead.
    let root = nix::unistd::geteuid().is_root();
    let fs_user = |uid: u32| {
        if root {
            nix::unistd::setfsuid(nix::unistd::Uid::from_raw(uid));
        }
    };
    fs_user(65534);
    f.scan();
    fs_user(0);
    f.write("c.yaml", &WEB.replace("web", "late"));
    fs::set_permissions(
        f.dir.path().join("c.yaml"),
        fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    fs_user(65534);
    f.scan();
    fs_user(0);
    fs::set_permissions(f.dir.path().join("sub"), fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(f.services(), ["late", "web"], "files elsewhere are read");
    let e: Vec<String> = f.log.all().map(|e| e.to_string()).collect();
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].contains("/sub: cannot read: Permission denied"),
        "{e:?}"
    );
    f.scan();
    assert_eq!(f.services(), ["db", "late", "web"], "readable again");
    assert!(f.log.is_empty());
}

#[test]
fn refresh_reads_only_the_paths_named() {
    let mut f = Fixture::new();
    f.write("a.yaml", WEB);
    f.write("b.yaml", DB);
    f.scan();
    f.write("a.yaml", &WEB.replace("80", "81"));
    f.write("b.yaml", &DB.replace("5432", "5433"));
    let a = f.dir.path().join("a.yaml");
    for b in f.src.refresh(&BTreeSet::from([a.clone()])) {
        b.apply_to(&mut f.store, &mut f.log);
    }
    assert_eq!((f.port("web"), f.port("db")), (81, 5432));
    // A new directory is walked; a removed one removes its files.
    f.write("sub/c.yaml", &WEB.replace("web", "c"));
    for b in f.src.refresh(&BTreeSet::from([f.dir.path().join("sub")])) {
        b.apply_to(&mut f.store, &mut f.log);
    }
    assert_eq!(f.services(), ["c", "db", "web"]);
    assert!(f.src.dirs().contains(&f.dir.path().join("sub")));
    fs::remove_dir_all(f.dir.path().join("sub")).unwrap();
    for b in f.src.refresh(&BTreeSet::from([f.dir.path().join("sub")])) {
        b.apply_to(&mut f.store, &mut f.log);
    }
    assert_eq!(f.services(), ["db", "web"]);
    // What a change asks to re-read.
    let d = f.dir.path();
    assert_eq!(f.src.target(&a), Some(a.clone()));
    assert_eq!(f.src.target(&d.join(".a.yaml.swp")), None);
    assert_eq!(f.src.target(&d.join("..data")), Some(d.to_path_buf()));
    assert_eq!(
        f.src.target(&d.join("x/..2026_01_01/s.yaml")),
        Some(d.join("x"))
    );
    assert_eq!(f.src.target(Path::new("/elsewhere/a.yaml")), None);
}

#[test]
fn objects_without_a_creation_time_get_one_that_never_changes() {
    let mut f = Fixture::new();
    f.write("a.yaml", WEB);
    f.scan();
    let key = NamespacedName::new("default", "web");
    let t0 = f.store.services[&key]
        .object
        .metadata
        .creation_timestamp
        .clone();
    assert!(t0.is_some());
    std::thread::sleep(std::time::Duration::from_millis(20));
    f.write("a.yaml", &WEB.replace("80", "81"));
    f.scan();
    assert_eq!(
        f.store.services[&key].object.metadata.creation_timestamp,
        t0
    );
    let stated = WEB.replace(
        "{name: web}",
        "{name: web, creationTimestamp: \"2020-01-01T00:00:00Z\"}",
    );
    f.write("a.yaml", &stated);
    f.scan();
    let t = f.store.services[&key]
        .object
        .metadata
        .creation_timestamp
        .clone()
        .unwrap();
    assert_eq!(t.0.to_string(), "2020-01-01T00:00:00Z");
}

#[test]
fn a_removed_directory_takes_its_own_files_and_no_neighbour_with_the_same_prefix() {
    let mut f = Fixture::new();
    f.write("sub/c.yaml", &WEB.replace("web", "c"));
    f.write("sub/deeper/e.yaml", &WEB.replace("web", "e"));
    f.write("sub.yaml", &WEB.replace("web", "s"));
    f.write("sub-b/d.yaml", &WEB.replace("web", "d"));
    f.write("su.yaml", &WEB.replace("web", "u"));
    f.scan();
    assert_eq!(f.services(), ["c", "d", "e", "s", "u"]);
    // A directory walked again drops what is no longer in it, and nothing beside it.
    fs::remove_file(f.dir.path().join("sub/deeper/e.yaml")).unwrap();
    for b in f.src.refresh(&BTreeSet::from([f.dir.path().join("sub")])) {
        b.apply_to(&mut f.store, &mut f.log);
    }
    assert_eq!(f.services(), ["c", "d", "s", "u"]);
    fs::remove_dir_all(f.dir.path().join("sub")).unwrap();
    for b in f.src.refresh(&BTreeSet::from([f.dir.path().join("sub")])) {
        b.apply_to(&mut f.store, &mut f.log);
    }
    assert_eq!(f.services(), ["d", "s", "u"]);
    // A file that is gone (an atomic rename's temporary name, say) removes itself alone.
    fs::remove_file(f.dir.path().join("sub.yaml")).unwrap();
    for b in f
        .src
        .refresh(&BTreeSet::from([f.dir.path().join("sub.yaml")]))
    {
        b.apply_to(&mut f.store, &mut f.log);
    }
    assert_eq!(f.services(), ["d", "u"]);
}
