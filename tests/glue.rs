//! GLUE reading: the real SST-2 files (exact counts, first and last rows), and small
//! synthetic files for every task preset, broken rows, overrides and file-level errors.

use std::path::{Path, PathBuf};

use capaboost::Error;
use capaboost::tasks::glue::{self, Columns, Label, ReadOptions, Split, Task};

const SST2: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/data/glue/SST-2");

/// A fresh folder of its own per test, so tests can run in parallel.
fn tmp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("capaboost-glue-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn write(dir: &Path, file: &str, text: &str) -> PathBuf {
    let p = dir.join(file);
    std::fs::write(&p, text).unwrap();
    p
}

fn read(dir: &Path, file: &str, text: &str, task: Task) -> Split {
    let p = write(dir, file, text);
    glue::read_split(&p, task, &ReadOptions::default()).unwrap()
}

fn file_message(e: Error) -> (String, String) {
    match e {
        Error::File { path, message } => (path, message),
        other => panic!("expected Error::File, got {other:?}"),
    }
}

#[test]
fn task_names_and_properties() {
    for (s, t) in [
        ("sst2", Task::Sst2),
        ("sst-2", Task::Sst2),
        ("SST-2", Task::Sst2),
        ("CoLA", Task::Cola),
        ("mrpc", Task::Mrpc),
        ("RTE", Task::Rte),
        ("stsb", Task::Stsb),
        ("STS-B", Task::Stsb),
        ("qnli", Task::Qnli),
        ("QQP", Task::Qqp),
        ("Mnli", Task::Mnli),
    ] {
        assert_eq!(s.parse::<Task>().unwrap(), t, "{s}");
    }
    let e = "wnli".parse::<Task>().unwrap_err();
    assert!(e.to_string().contains("wnli"), "{e}");
    for t in Task::ALL {
        assert_eq!(t.name().parse::<Task>().unwrap(), t);
        assert_eq!(t.is_regression(), t == Task::Stsb);
        let n = t.label_names().len();
        if t.is_regression() {
            assert_eq!((t.num_labels(), n), (1, 0));
        } else {
            assert_eq!(t.num_labels(), n, "{t}");
        }
    }
    assert_eq!(Task::Mnli.num_labels(), 3);
    assert_eq!(Task::Sst2.label_names(), ["negative", "positive"]);
    assert_eq!(Task::Cola.label_names(), ["unacceptable", "acceptable"]);
    assert_eq!(Task::Mrpc.label_names(), ["not_equivalent", "equivalent"]);
    assert_eq!(Task::Qqp.label_names(), ["not_duplicate", "duplicate"]);
    assert_eq!(Task::Rte.label_names(), ["entailment", "not_entailment"]);
    assert_eq!(Task::Qnli.label_names(), ["entailment", "not_entailment"]);
    assert_eq!(
        Task::Mnli.label_names(),
        ["entailment", "neutral", "contradiction"]
    );
    assert_eq!(Task::Mnli.dev_file(), "dev_matched.tsv");
    assert_eq!(Task::Rte.dev_file(), "dev.tsv");
    assert_eq!(Task::Cola.metric_names(), ["mcc"]);
    for t in [Task::Sst2, Task::Qnli, Task::Rte, Task::Mnli] {
        assert_eq!(t.metric_names(), ["accuracy"]);
    }
    assert_eq!(Task::Mrpc.metric_names(), ["accuracy", "f1"]);
    assert_eq!(Task::Qqp.metric_names(), ["accuracy", "f1"]);
    assert_eq!(Task::Stsb.metric_names(), ["pearson", "spearman"]);
    assert!(Task::Mrpc.is_pair() && !Task::Sst2.is_pair());
}

#[test]
fn real_sst2_files_exact_counts_and_rows() {
    let dir = Path::new(SST2);
    let (train, dev) = glue::read_task(dir, Task::Sst2, &ReadOptions::default()).unwrap();
    let test =
        glue::read_split(&dir.join("test.tsv"), Task::Sst2, &ReadOptions::default()).unwrap();

    // train.tsv: header `label<TAB>sentence`, CRLF line ends.
    assert_eq!(train.examples.len(), 67_349);
    assert_eq!(train.malformed, 0, "{:?}", train.malformed_samples);
    assert_eq!(
        train.columns,
        Columns {
            text_a: "sentence".into(),
            text_b: None,
            label: Some("label".into())
        }
    );
    let first = &train.examples[0];
    assert_eq!(first.text_a, "hide new secretions from the parental units");
    assert_eq!(
        (first.label, first.line, first.text_b.clone()),
        (Some(Label::Class(0)), 2, None)
    );
    assert_eq!(
        train.examples[1].text_a,
        "contains no wit , only labored gags"
    );
    assert_eq!(train.examples[2].label, Some(Label::Class(1)));
    let last = train.examples.last().unwrap();
    assert_eq!(
        last.text_a,
        "this new jangle of noise , mayhem and stupidity must be a serious contender for \
         the title ."
    );
    assert_eq!((last.label, last.line), (Some(Label::Class(0)), 67_350));
    // Counted independently with awk: 29,780 negative, 37,569 positive.
    let pos = train
        .examples
        .iter()
        .filter(|e| e.label == Some(Label::Class(1)))
        .count();
    assert_eq!(pos, 37_569);

    // dev.tsv: header `label<TAB>content`, LF.
    assert_eq!(dev.examples.len(), 872);
    assert_eq!(dev.malformed, 0, "{:?}", dev.malformed_samples);
    assert_eq!(dev.columns.text_a, "content");
    assert_eq!(dev.path, dir.join("dev.tsv"));
    assert_eq!(dev.examples[0].text_a, "one long string of cliches .");
    assert_eq!(dev.examples[0].label, Some(Label::Class(0)));
    let pos = dev
        .examples
        .iter()
        .filter(|e| e.label == Some(Label::Class(1)))
        .count();
    assert_eq!(pos, 444);

    // test.tsv is labelled here too.
    assert_eq!(test.examples.len(), 1_821);
    assert_eq!(test.malformed, 0, "{:?}", test.malformed_samples);
    assert_eq!(
        test.examples[0].text_a,
        "no movement , no yuks , not much of anything ."
    );
    assert_eq!(
        test.examples.last().unwrap().text_a,
        "but here 's the real damn : it is n't funny , either ."
    );

    // limit keeps the first N good examples.
    let opts = ReadOptions {
        limit: Some(10),
        ..Default::default()
    };
    let small = glue::read_split(&dir.join("train.tsv"), Task::Sst2, &opts).unwrap();
    assert_eq!(small.examples.len(), 10);
    assert_eq!(small.examples[..], train.examples[..10]);
}

#[test]
fn sst2_bom_crlf_text_column_and_trailing_lines() {
    let d = tmp_dir("sst2");
    let s = read(
        &d,
        "train.tsv",
        "\u{feff} Text \tLABEL\r\nit 's \"great\"\t1\r\nbad\tnegative\r\n\r\n\r\n",
        Task::Sst2,
    );
    assert_eq!(s.malformed, 0, "{:?}", s.malformed_samples);
    assert_eq!(s.columns.text_a, "Text");
    assert_eq!(s.columns.label.as_deref(), Some("LABEL"));
    // Quotes are literal in GLUE TSV.
    assert_eq!(s.examples[0].text_a, "it 's \"great\"");
    assert_eq!(s.examples[0].label, Some(Label::Class(1)));
    assert_eq!(s.examples[1].label, Some(Label::Class(0)));
    assert_eq!(s.examples[1].line, 3);
}

#[test]
fn cola_with_header_and_headerless() {
    let d = tmp_dir("cola");
    let s = read(
        &d,
        "dev.tsv",
        "gj04\t1\t\tOur friends won't buy this analysis.\n\
         gj04\t0\t*\tOne more pseudo generalization and I'm giving up.\n\
         gj04\t1\t\tThey drank the pub.\n",
        Task::Cola,
    );
    assert_eq!(s.malformed, 0, "{:?}", s.malformed_samples);
    assert_eq!(s.examples.len(), 3);
    assert_eq!(s.columns.text_a, "sentence");
    assert_eq!(s.examples[0].text_a, "Our friends won't buy this analysis.");
    assert_eq!(s.examples[0].label, Some(Label::Class(1)));
    assert_eq!(s.examples[0].line, 1, "headerless: the first row is data");
    assert_eq!(s.examples[1].label, Some(Label::Class(0)));

    let s = read(
        &d,
        "train.tsv",
        "sentence\tlabel\nThe sailors rode the breeze clear of the rocks.\tacceptable\n\
         Them drank.\t0\n",
        Task::Cola,
    );
    assert_eq!(s.malformed, 0, "{:?}", s.malformed_samples);
    assert_eq!(
        s.examples
            .iter()
            .map(|e| e.label.unwrap())
            .collect::<Vec<_>>(),
        [Label::Class(1), Label::Class(0)]
    );
}

#[test]
fn mrpc_original_layout() {
    let d = tmp_dir("mrpc");
    let s = read(
        &d,
        "train.tsv",
        "\u{feff}Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\r\n\
         1\t702876\t702977\tAmrozi accused his brother .\tReferring to him , Amrozi accused .\r\n\
         0\t2108705\t2108831\tYucaipa owned Dominick 's .\tYucaipa bought Dominick 's .\r\n",
        Task::Mrpc,
    );
    assert_eq!(s.malformed, 0, "{:?}", s.malformed_samples);
    assert_eq!(
        s.columns,
        Columns {
            text_a: "#1 String".into(),
            text_b: Some("#2 String".into()),
            label: Some("Quality".into())
        }
    );
    assert_eq!(s.examples[0].text_a, "Amrozi accused his brother .");
    assert_eq!(
        s.examples[0].text_b.as_deref(),
        Some("Referring to him , Amrozi accused .")
    );
    assert_eq!(s.examples[0].label, Some(Label::Class(1)));
    assert_eq!(s.examples[1].label, Some(Label::Class(0)));

    // The HF-style layout works through the fallbacks.
    let s = read(
        &d,
        "dev.tsv",
        "sentence1\tsentence2\tlabel\nA\tB\tequivalent\n",
        Task::Mrpc,
    );
    assert_eq!(s.examples[0].label, Some(Label::Class(1)));
}

#[test]
fn rte_qnli_qqp_presets() {
    let d = tmp_dir("pairs");
    let s = read(
        &d,
        "rte.tsv",
        "index\tsentence1\tsentence2\tlabel\n0\tP one.\tH one.\tnot_entailment\n\
         1\tP two.\tH two.\tENTAILMENT\n",
        Task::Rte,
    );
    assert_eq!(s.malformed, 0, "{:?}", s.malformed_samples);
    assert_eq!(s.examples[0].label, Some(Label::Class(1)));
    assert_eq!(s.examples[1].label, Some(Label::Class(0)));
    assert_eq!(s.examples[1].text_b.as_deref(), Some("H two."));

    let s = read(
        &d,
        "qnli.tsv",
        "index\tquestion\tsentence\tlabel\n0\tWho?\tHe did.\tentailment\n",
        Task::Qnli,
    );
    assert_eq!(s.malformed, 0, "{:?}", s.malformed_samples);
    assert_eq!(s.columns.text_a, "question");
    assert_eq!(s.columns.text_b.as_deref(), Some("sentence"));
    assert_eq!(s.examples[0].text_a, "Who?");
    assert_eq!(s.examples[0].label, Some(Label::Class(0)));

    let s = read(
        &d,
        "qqp.tsv",
        "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n\
         1\t3\t4\tHow do I learn Rust?\tWhat is the best way to learn Rust?\t1\n\
         2\t5\t6\tWhy?\tWhy not?\t0\n",
        Task::Qqp,
    );
    assert_eq!(s.malformed, 0, "{:?}", s.malformed_samples);
    assert_eq!(s.columns.label.as_deref(), Some("is_duplicate"));
    assert_eq!(
        s.examples
            .iter()
            .map(|e| e.label.unwrap())
            .collect::<Vec<_>>(),
        [Label::Class(1), Label::Class(0)]
    );
}

#[test]
fn mnli_string_labels_and_dev_matched_fallback() {
    let d = tmp_dir("mnli");
    let text = "index\tpromptID\tpairID\tgenre\tsentence1\tsentence2\tlabel1\tgold_label\n\
                0\t1\t1e\tgov\tP a.\tH a.\tneutral\tneutral\n\
                1\t2\t2e\tgov\tP b.\tH b.\tcontradiction\tContradiction\n\
                2\t3\t3e\tgov\tP c.\tH c.\tentailment\tentailment\n\
                3\t4\t4e\tgov\tP d.\tH d.\t-\t-\n";
    write(&d, "train.tsv", text);
    write(&d, "dev.tsv", text);
    let (train, dev) = glue::read_task(&d, Task::Mnli, &ReadOptions::default()).unwrap();
    assert_eq!(dev.path, d.join("dev.tsv"), "falls back to dev.tsv");
    assert_eq!(train.columns.label.as_deref(), Some("gold_label"));
    assert_eq!(
        train
            .examples
            .iter()
            .map(|e| e.label.unwrap())
            .collect::<Vec<_>>(),
        [Label::Class(1), Label::Class(2), Label::Class(0)]
    );
    // A "-" gold label (no annotator consensus) is a bad label, not a crash.
    assert_eq!(train.malformed, 1);
    assert!(
        train.malformed_samples[0].starts_with("line 5: bad label \"-\""),
        "{:?}",
        train.malformed_samples
    );
    assert!(train.malformed_samples[0].contains("gold_label"));

    write(&d, "dev_matched.tsv", text);
    let (_, dev) = glue::read_task(&d, Task::Mnli, &ReadOptions::default()).unwrap();
    assert_eq!(dev.path, d.join("dev_matched.tsv"));
}

#[test]
fn stsb_float_scores() {
    let d = tmp_dir("stsb");
    let s = read(
        &d,
        "dev.tsv",
        "index\tgenre\tsentence1\tsentence2\tscore\n\
         0\tmain\tA man plays.\tA man is playing.\t5.000\n\
         1\tmain\tA cat.\tA dog.\t0\n\
         2\tmain\tX.\tY.\t2.5\n\
         3\tmain\tX.\tY.\t5.5\n\
         4\tmain\tX.\tY.\tNaN\n\
         5\tmain\tX.\tY.\tpositive\n",
        Task::Stsb,
    );
    assert_eq!(s.columns.label.as_deref(), Some("score"));
    assert_eq!(
        s.examples
            .iter()
            .map(|e| e.label.unwrap())
            .collect::<Vec<_>>(),
        [Label::Score(5.0), Label::Score(0.0), Label::Score(2.5)]
    );
    assert_eq!(s.malformed, 3);
    assert!(s.malformed_samples[0].starts_with("line 5: bad score \"5.5\""));
    assert!(s.malformed_samples[1].starts_with("line 6: bad score \"NaN\""));
    assert!(s.malformed_samples[2].starts_with("line 7: bad score \"positive\""));
}

#[test]
fn broken_rows_are_counted_with_reasons() {
    let d = tmp_dir("broken");
    let s = read(
        &d,
        "train.tsv",
        "sentence1\tsentence2\tlabel\n\
         good a\tgood b\t0\n\
         too few\t1\n\
         a\tb\t1\textra\n\
         a\tb\t2\n\
         a\tb\tmaybe\n\
         \x20 \tb\t0\n\
         a\t\t1\n\
         \n\
         good c\tgood d\t1\n",
        Task::Rte,
    );
    assert_eq!(s.examples.len(), 2);
    assert_eq!(s.examples[1].line, 10);
    assert_eq!(s.malformed, 7);
    assert_eq!(s.malformed_samples.len(), glue::MALFORMED_SAMPLES);
    let want = [
        "line 3: expected 3 tab-separated fields, found 2",
        "line 4: expected 3 tab-separated fields, found 4",
        "line 5: bad label \"2\"",
        "line 6: bad label \"maybe\"",
        "line 7: empty text in column \"sentence1\"",
    ];
    for (got, want) in s.malformed_samples.iter().zip(want) {
        assert!(got.starts_with(want), "{got:?} should start with {want:?}");
    }

    // Non-UTF-8 bytes in a row are a malformed row too.
    let p = d.join("latin1.tsv");
    std::fs::write(&p, b"sentence\tlabel\ncaf\xe9\t1\nok\t0\n").unwrap();
    let s = glue::read_split(&p, Task::Sst2, &ReadOptions::default()).unwrap();
    assert_eq!((s.examples.len(), s.malformed), (1, 1));
    assert!(s.malformed_samples[0].starts_with("line 2: not valid UTF-8"));
}

#[test]
fn column_overrides() {
    let d = tmp_dir("override");
    let p = write(
        &d,
        "train.tsv",
        "id\treview\tsummary\tstars\n1\tLoved it\tgood\t1\n2\tMeh\tbad\t0\n",
    );
    let opts = ReadOptions {
        text_a: Some("Review".into()),
        text_b: Some("summary".into()),
        label: Some(" stars ".into()),
        limit: None,
        allow_unlabelled: false,
    };
    let s = glue::read_split(&p, Task::Sst2, &opts).unwrap();
    assert_eq!(s.malformed, 0, "{:?}", s.malformed_samples);
    assert_eq!(
        s.columns,
        Columns {
            text_a: "review".into(),
            text_b: Some("summary".into()),
            label: Some("stars".into())
        }
    );
    assert_eq!(s.examples[0].text_a, "Loved it");
    assert_eq!(s.examples[0].text_b.as_deref(), Some("good"));
    assert_eq!(s.examples[1].label, Some(Label::Class(0)));

    // An override replaces the preset: it is not a fallback.
    let p = write(&d, "dev.tsv", "sentence\tlabel\nx\t1\n");
    let opts = ReadOptions {
        text_a: Some("text".into()),
        ..Default::default()
    };
    let (_, msg) = file_message(glue::read_split(&p, Task::Sst2, &opts).unwrap_err());
    assert!(msg.contains("no text_a column"), "{msg}");
    assert!(msg.contains("\"text\""), "{msg}");

    // Overrides also name the virtual columns of headerless CoLA.
    let p = write(&d, "cola.tsv", "src\t1\t\tFine.\n");
    let opts = ReadOptions {
        text_a: Some("source".into()),
        ..Default::default()
    };
    let s = glue::read_split(&p, Task::Cola, &opts).unwrap();
    assert_eq!(s.examples[0].text_a, "src");
}

#[test]
fn missing_columns_name_the_file_and_the_columns_found() {
    let d = tmp_dir("missing-col");
    let p = write(&d, "train.tsv", "premise\thypothesis\tlabel\na\tb\t0\n");
    let (path, msg) =
        file_message(glue::read_split(&p, Task::Rte, &ReadOptions::default()).unwrap_err());
    assert_eq!(path, p.display().to_string());
    assert!(msg.contains("no text_a column"), "{msg}");
    assert!(msg.contains("\"sentence1\""), "{msg}");
    assert!(
        msg.contains("columns found: \"premise\", \"hypothesis\", \"label\""),
        "{msg}"
    );

    // An unlabelled test split is an error saying so, not examples with made-up labels.
    let p = write(&d, "test.tsv", "index\tsentence\n0\tsome text\n");
    let (path, msg) =
        file_message(glue::read_split(&p, Task::Sst2, &ReadOptions::default()).unwrap_err());
    assert!(path.ends_with("test.tsv"));
    assert!(msg.contains("no label column"), "{msg}");
    assert!(msg.contains("no labels"), "{msg}");
    assert!(msg.contains("\"index\", \"sentence\""), "{msg}");
}

#[test]
fn missing_and_empty_files_are_errors() {
    let d = tmp_dir("missing-file");
    let p = d.join("nope.tsv");
    let e = glue::read_split(&p, Task::Sst2, &ReadOptions::default()).unwrap_err();
    assert!(matches!(e, Error::Io { .. }), "{e:?}");
    assert!(e.to_string().contains("nope.tsv"), "{e}");
    let e = glue::read_task(&d, Task::Sst2, &ReadOptions::default()).unwrap_err();
    assert!(e.to_string().contains("train.tsv"), "{e}");

    for text in ["", "\r\n\n", "\u{feff}"] {
        let p = write(&d, "empty.tsv", text);
        let (path, msg) =
            file_message(glue::read_split(&p, Task::Sst2, &ReadOptions::default()).unwrap_err());
        assert!(path.ends_with("empty.tsv"));
        assert!(msg.contains("empty file"), "{msg}");
    }

    // A header alone is a valid, empty split.
    let s = read(&d, "header.tsv", "sentence\tlabel\n", Task::Sst2);
    assert_eq!((s.examples.len(), s.malformed), (0, 0));
}

#[test]
fn unlabelled_files_are_read_as_texts_only_when_allowed() {
    let d = tmp_dir("unlabelled");
    // GLUE's official test files: an index column and the texts, no label.
    let p = write(&d, "test.tsv", "index\tsentence\n0\tit works .\n1\tno .\n");
    let (_, msg) =
        file_message(glue::read_split(&p, Task::Sst2, &ReadOptions::default()).unwrap_err());
    assert!(msg.contains("no label column"), "{msg}");
    let opts = ReadOptions {
        allow_unlabelled: true,
        ..Default::default()
    };
    let s = glue::read_split(&p, Task::Sst2, &opts).unwrap();
    assert_eq!(s.columns.label, None);
    assert_eq!(s.malformed, 0);
    let got: Vec<_> = s
        .examples
        .iter()
        .map(|e| (e.text_a.as_str(), e.label, e.line))
        .collect();
    assert_eq!(got, [("it works .", None, 2), ("no .", None, 3)]);
    // A label column that is there is still read and checked.
    let p = write(&d, "dev.tsv", "sentence\tlabel\nfine\t1\nbad\tmaybe\n");
    let s = glue::read_split(&p, Task::Sst2, &opts).unwrap();
    assert_eq!(s.columns.label.as_deref(), Some("label"));
    assert_eq!((s.examples.len(), s.malformed), (1, 1));
    assert_eq!(s.examples[0].label, Some(Label::Class(1)));
    // A label column named explicitly must exist even then.
    let opts = ReadOptions {
        allow_unlabelled: true,
        label: Some("gold".into()),
        ..Default::default()
    };
    let p = write(&d, "test2.tsv", "index\tsentence\n0\tit works .\n");
    assert!(glue::read_split(&p, Task::Sst2, &opts).is_err());
    std::fs::remove_dir_all(&d).ok();
}
