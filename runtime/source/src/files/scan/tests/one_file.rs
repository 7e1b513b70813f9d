//! One file of many documents: a re-read decodes only what changed, and the file's list of
//! objects stays exact through renames, removals and broken documents.

use super::*;

fn svc(name: &str, port: u32) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec: {{ports: [{{port: {port}}}]}}\n"
    )
}

fn many(ports: &[u32]) -> String {
    let docs: Vec<String> = ports
        .iter()
        .enumerate()
        .map(|(i, p)| svc(&format!("s{i}"), *p))
        .collect();
    docs.join("---\n")
}

#[test]
fn a_one_file_edit_decodes_only_the_documents_it_changed() {
    let mut f = Fixture::new();
    f.write("all.yaml", &many(&[80, 81, 82, 83]));
    f.scan();
    let path = f.dir.path().join("all.yaml");
    let b = f
        .src
        .ingest(
            &path,
            many(&[80, 91, 82, 83]).as_bytes(),
            SystemTime::UNIX_EPOCH,
        )
        .unwrap();
    let applied: Vec<String> = b
        .applies
        .iter()
        .map(|(o, _)| o.key().name.to_string())
        .collect();
    assert_eq!(
        applied,
        ["s1"],
        "only the changed document is decoded and applied"
    );
    assert_eq!(b.unchanged.len(), 3);
    assert!(b.deletes.is_empty());
    b.apply_to(&mut f.store, &mut f.log);
    assert_eq!(f.port("s1"), 91);
    assert_eq!(f.services(), ["s0", "s1", "s2", "s3"]);

    // A fresh source reading the same file gives the same store.
    let mut fresh = Fixture::new();
    fresh.write("all.yaml", &many(&[80, 91, 82, 83]));
    fresh.scan();
    for i in 0..4 {
        let n = format!("s{i}");
        assert_eq!(f.port(&n), fresh.port(&n), "{n}");
    }

    // A document removed shifts the rest: they are decoded again, and the gone one deleted.
    let b = f
        .src
        .ingest(
            &path,
            many(&[80, 82, 83]).as_bytes(),
            SystemTime::UNIX_EPOCH,
        )
        .unwrap();
    assert_eq!(b.deletes.len(), 1);
    b.apply_to(&mut f.store, &mut f.log);
    assert_eq!(f.services(), ["s0", "s1", "s2"]);
    assert_eq!(f.port("s1"), 82);
}

#[test]
fn an_unchanged_document_keeps_its_validation_error_and_a_moved_name_is_read_whole() {
    let mut f = Fixture::new();
    // s1's port is out of range: a validation error in the store, not a parse error.
    f.write("all.yaml", &many(&[80, 70000]));
    f.scan();
    assert_eq!(f.log.len(), 1, "{:?}", f.log.all().collect::<Vec<_>>());
    let path = f.dir.path().join("all.yaml");
    let b = f
        .src
        .ingest(&path, many(&[81, 70000]).as_bytes(), SystemTime::UNIX_EPOCH)
        .unwrap();
    b.apply_to(&mut f.store, &mut f.log);
    assert_eq!(f.port("s0"), 81);
    let errors: Vec<String> = f.log.all().map(ToString::to_string).collect();
    assert_eq!(
        errors.len(),
        1,
        "the unchanged document's error stands: {errors:?}"
    );
    assert!(errors[0].contains("s1"), "{errors:?}");

    // A changed document now names what an unchanged one does: the earlier one wins, as on
    // a fresh read, and the later one is the duplicate.
    let body = format!("{}---\n{}", svc("s1", 90), svc("s1", 70000));
    let b = f
        .src
        .ingest(&path, body.as_bytes(), SystemTime::UNIX_EPOCH)
        .unwrap();
    b.apply_to(&mut f.store, &mut f.log);
    assert_eq!(f.port("s1"), 90);
    assert!(
        f.log
            .all()
            .any(|e| e.to_string().contains("Duplicate value")),
        "{:?}",
        f.log.all().collect::<Vec<_>>()
    );
}

/// The names a batch applies and deletes.
fn names(batch: &Batch) -> (Vec<String>, Vec<String>) {
    let applied = batch.applies.iter().map(|(o, _)| o.key().name.to_string());
    let deleted = batch.deletes.iter().map(|(_, k)| k.name.to_string());
    (applied.collect(), deleted.collect())
}

#[test]
fn renames_and_broken_documents_keep_the_files_objects_exact() {
    let mut f = Fixture::new();
    f.write("all.yaml", &format!("{}...\n", many(&[80, 81, 82])));
    f.scan();
    let path = f.dir.path().join("all.yaml");
    let read = |f: &mut Fixture, body: &str| {
        let b = f
            .src
            .ingest(&path, body.as_bytes(), SystemTime::UNIX_EPOCH)?;
        let seen = names(&b);
        b.apply_to(&mut f.store, &mut f.log);
        Some(seen)
    };

    // A document renames its object: the old name goes, the new one comes, the rest stay.
    let (s0, t1, s2) = (svc("s0", 80), svc("t1", 81), svc("s2", 82));
    let renamed = format!("{s0}---\n{t1}---\n{s2}...\n");
    let seen = read(&mut f, &renamed).expect("the file changed");
    assert_eq!(seen, (vec!["t1".into()], vec!["s1".into()]));
    assert_eq!(f.services(), ["s0", "s2", "t1"]);

    // A comment after the stream's end marker changes no object, so the read gives nothing.
    assert!(read(&mut f, &format!("{renamed}# the end\n")).is_none());

    // A document that cannot be identified keeps every object; fixed, the file is exact
    // again, and a document dropped then takes its object away.
    let broken = format!("{}---\n{{not yaml\n---\n{}", svc("s0", 80), svc("s2", 82));
    read(&mut f, &broken).expect("the file changed");
    assert_eq!(
        f.services(),
        ["s0", "s2", "t1"],
        "the broken document's object stays"
    );
    let fixed = format!("{}---\n{}", svc("s0", 80), svc("s2", 82));
    let seen = read(&mut f, &fixed).expect("the file changed");
    assert_eq!(seen.1, ["t1"]);
    assert_eq!(f.services(), ["s0", "s2"]);

    // The file's list is what a fresh read gives: removing the file takes exactly that.
    fs::remove_file(&path).unwrap();
    for b in f.src.refresh(&BTreeSet::from([path.clone()])) {
        assert_eq!(b.deletes.len(), 2, "{:?}", b.deletes);
        b.apply_to(&mut f.store, &mut f.log);
    }
    assert!(f.services().is_empty());
}
