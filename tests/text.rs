//! The text input layer: sentence splitting, tokens and vocabularies, reading corpora from
//! disk and the built-in corpus.

mod common;

use common::{cases, TempDir};
use proptest::prelude::*;
use selfsup::data::DataError;
use selfsup::text::corpus::{MAX_SENTENCES, MIN_SENTENCES};
use selfsup::text::read::{MAX_FILE_BYTES, MIN_DOCUMENT_SENTENCES};
use selfsup::text::vocab::MAX_VOCAB_SIZE;
use selfsup::text::{
    builtin_corpus, builtin_document, read_corpus, read_corpus_report, split_sentences, tokenize,
    topic_of, CorpusConfig, Subwords, Vocab, MAX_SENTENCE_CHARS, PAD, PAD_TOKEN, TOPICS, UNK,
    UNK_TOKEN,
};
use selfsup::Error;
use std::collections::HashSet;
use std::path::Path;

fn split(text: &str) -> Vec<String> {
    split_sentences(text)
}

// ---------------------------------------------------------------- sentence splitting

#[test]
fn splits_on_terminators() {
    assert_eq!(
        split("The cat sat. The dog ran! Did it rain? Yes."),
        ["The cat sat.", "The dog ran!", "Did it rain?", "Yes."]
    );
    assert_eq!(split("Really?! No way."), ["Really?!", "No way."]);
    assert_eq!(
        split("It ends without a period"),
        ["It ends without a period"]
    );
    assert_eq!(
        split("Numbers too. 42 is the answer."),
        ["Numbers too.", "42 is the answer."]
    );
}

#[test]
fn empty_and_blank_inputs_give_nothing() {
    assert!(split("").is_empty());
    assert!(split("   \n\n \t \r\n").is_empty());
}

#[test]
fn abbreviations_do_not_end_sentences() {
    assert_eq!(
        split("Mr. Smith met Dr. Jones at St. Mary's. They talked."),
        ["Mr. Smith met Dr. Jones at St. Mary's.", "They talked."]
    );
    assert_eq!(
        split("We bought apples, pears, etc. Fruit is good."),
        ["We bought apples, pears, etc. Fruit is good."]
    );
    assert_eq!(
        split("Some fruit, e.g. Apples, are red. Others, i.e. Bananas, are not."),
        [
            "Some fruit, e.g. Apples, are red.",
            "Others, i.e. Bananas, are not."
        ]
    );
    assert_eq!(
        split("He moved to the U.S. Army base. It was big."),
        ["He moved to the U.S. Army base.", "It was big."]
    );
    assert_eq!(
        split("J. R. R. Tolkien wrote it. Acme Inc. Sold it."),
        ["J. R. R. Tolkien wrote it.", "Acme Inc. Sold it."]
    );
    assert_eq!(
        split("See Fig. 3 for details. Prof. Lee agreed."),
        ["See Fig. 3 for details.", "Prof. Lee agreed."]
    );
    assert_eq!(
        split("We met at 10 a.m. Tom was late."),
        ["We met at 10 a.m. Tom was late."]
    );
}

#[test]
fn the_pronoun_i_is_not_an_initial() {
    assert_eq!(
        split("So did I. Then we left."),
        ["So did I.", "Then we left."]
    );
    assert_eq!(split("Ask T. Then go."), ["Ask T. Then go."]);
}

#[test]
fn no_is_an_abbreviation_only_before_a_digit() {
    assert_eq!(
        split("Room No. 5 is free. Go."),
        ["Room No. 5 is free.", "Go."]
    );
    assert_eq!(
        split("She said no. Then she left."),
        ["She said no.", "Then she left."]
    );
}

#[test]
fn decimals_and_versions_do_not_end_sentences() {
    assert_eq!(
        split("Pi is 3.14 or so. Version 1.2.3 is out. It costs $4.50 today."),
        [
            "Pi is 3.14 or so.",
            "Version 1.2.3 is out.",
            "It costs $4.50 today."
        ]
    );
}

#[test]
fn quotes_and_brackets_close_sentences() {
    assert_eq!(
        split("He said \"Stop.\" Then he left. (It was late.) Everyone slept."),
        [
            "He said \"Stop.\"",
            "Then he left.",
            "(It was late.)",
            "Everyone slept."
        ]
    );
    // A lowercase continuation after a quoted exclamation stays in the sentence.
    assert_eq!(
        split("\"Stop!\" he shouted. She stopped."),
        ["\"Stop!\" he shouted.", "She stopped."]
    );
    assert_eq!(
        split("“It is late,” she said. “Go home.” He went."),
        ["“It is late,” she said.", "“Go home.”", "He went."]
    );
    assert_eq!(
        split("It's 'done.' Next one."),
        ["It's 'done.'", "Next one."]
    );
}

#[test]
fn ellipses() {
    assert_eq!(
        split("Wait... Then it happened. Well… Fine."),
        ["Wait...", "Then it happened.", "Well…", "Fine."]
    );
    // A lowercase word after an ellipsis continues the sentence.
    assert_eq!(
        split("And then... nothing happened."),
        ["And then... nothing happened."]
    );
}

#[test]
fn line_wrapped_paragraphs_and_blank_lines() {
    let text = "This sentence is wrapped\nacross two lines. And this\r\none too.\n\n\
                A heading without a period\n\n   \t\nThe next paragraph starts\nhere.";
    assert_eq!(
        split(text),
        [
            "This sentence is wrapped across two lines.",
            "And this one too.",
            "A heading without a period",
            "The next paragraph starts here.",
        ]
    );
    // A blank line ends a sentence even before a lowercase word.
    assert_eq!(
        split("first part\n\nsecond part"),
        ["first part", "second part"]
    );
    // Runs of whitespace collapse.
    assert_eq!(split("  Too \t many   spaces .  "), ["Too many spaces ."]);
}

#[test]
fn non_ascii_text() {
    assert_eq!(
        split("Élodie est arrivée. Ça va? Über alles! Ωmega ends."),
        [
            "Élodie est arrivée.",
            "Ça va?",
            "Über alles!",
            "Ωmega ends."
        ]
    );
    // Scripts without case start sentences; full-width terminators always end them.
    assert_eq!(
        split("これはペンです。それは本です。"),
        ["これはペンです。", "それは本です。"]
    );
    assert_eq!(split("Hello. 你好。 Bye."), ["Hello.", "你好。", "Bye."]);
    assert_eq!(
        split("Emoji 🎉 party. Next 😀!"),
        ["Emoji 🎉 party.", "Next 😀!"]
    );
}

#[test]
fn very_long_sentences_are_truncated() {
    let long = format!("L{}", "é".repeat(MAX_SENTENCE_CHARS * 3));
    let out = split(&format!("Short one. {long} Last one."));
    assert_eq!(
        out.len(),
        2,
        "{:?}",
        out.iter().map(|s| s.len()).collect::<Vec<_>>()
    );
    assert_eq!(out[0], "Short one.");
    assert_eq!(out[1].chars().count(), MAX_SENTENCE_CHARS);
    assert!(out[1].starts_with('L') && out[1].chars().skip(1).all(|c| c == 'é'));
    // Words: the truncation never leaves a trailing space.
    let words = "word ".repeat(MAX_SENTENCE_CHARS);
    let out = split(&words);
    assert_eq!(out.len(), 1);
    assert!(out[0].chars().count() <= MAX_SENTENCE_CHARS);
    assert!(!out[0].ends_with(' '));
}

/// Whether `needle`'s non-whitespace characters appear in order in `hay`'s.
fn is_subsequence(needle: &str, hay: &str) -> bool {
    let mut hay = hay.chars().filter(|c| !c.is_whitespace());
    needle
        .chars()
        .filter(|c| !c.is_whitespace())
        .all(|c| hay.any(|h| h == c))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(200)))]

    #[test]
    fn splitter_never_panics_and_only_drops_whitespace(
        text in "(\\PC|[ \n\t\r.!?\"'”’)(A-Za-z0-9…。]){0,400}",
        arbitrary in any::<String>(),
    ) {
        for t in [&text, &arbitrary] {
            let out = split_sentences(t);
            for s in &out {
                prop_assert!(!s.is_empty());
                prop_assert_eq!(s.trim(), s.as_str());
                prop_assert!(s.chars().count() <= MAX_SENTENCE_CHARS);
                prop_assert!(!s.contains("  ") && !s.contains('\n') && !s.contains('\t'));
            }
            let joined = out.concat();
            prop_assert!(is_subsequence(&joined, t), "{:?} -> {:?}", t, out);
            // Nothing but whitespace is lost when no sentence was truncated.
            let kept: usize = joined.chars().filter(|c| !c.is_whitespace()).count();
            let had: usize = t.chars().filter(|c| !c.is_whitespace()).count();
            prop_assert!(kept <= had);
            if t.chars().count() <= MAX_SENTENCE_CHARS {
                prop_assert_eq!(kept, had);
            }
        }
    }

    #[test]
    fn tokenizer_and_encoder_never_panic(text in any::<String>(), max_len in 0usize..20) {
        let tokens = tokenize(&text);
        for t in &tokens {
            prop_assert!(!t.is_empty());
            prop_assert!(!t.chars().any(char::is_whitespace));
        }
        let vocab = Vocab::build([text.as_str()], 1, 50).unwrap();
        let ids = vocab.encode(&text, max_len);
        prop_assert_eq!(ids.len(), tokens.len().min(max_len));
        prop_assert!(ids.iter().all(|&id| (id as usize) < vocab.len() && id != PAD));
        prop_assert_eq!(Vocab::from_json(&vocab.to_json()).unwrap(), vocab);
    }
}

// ---------------------------------------------------------------- tokens

#[test]
fn tokenizer_cases() {
    assert_eq!(
        tokenize("Hello, World! Don't stop."),
        ["hello", ",", "world", "!", "don't", "stop", "."]
    );
    assert_eq!(
        tokenize("It’s 3.14 o'clock"),
        ["it's", "3", ".", "14", "o'clock"]
    );
    // Apostrophes outside words are punctuation.
    assert_eq!(
        tokenize("'quoted' rock'n'roll'"),
        ["'", "quoted", "'", "rock'n'roll", "'"]
    );
    assert_eq!(tokenize("ÉCOLE Straße"), ["école", "straße"]);
    // A decomposed accent stays in its word.
    assert_eq!(tokenize("Cafe\u{301} ok"), ["cafe\u{301}", "ok"]);
    assert_eq!(tokenize("a--b (c)"), ["a", "-", "-", "b", "(", "c", ")"]);
    assert_eq!(tokenize("<pad> <unk>"), ["<", "pad", ">", "<", "unk", ">"]);
    assert!(tokenize("   \n\t").is_empty());
    assert_eq!(tokenize("你好"), ["你好"]);
}

// ---------------------------------------------------------------- vocabularies

#[test]
fn vocab_orders_by_count_then_bytes() {
    let v = Vocab::build(["b a c a b a", "d c"], 1, 100).unwrap();
    assert_eq!(v.words(), [PAD_TOKEN, UNK_TOKEN, "a", "b", "c", "d"]);
    assert_eq!(v.len(), 6);
    assert!(!v.is_empty());
    assert_eq!(v.id(PAD_TOKEN), PAD);
    assert_eq!(v.id(UNK_TOKEN), UNK);
    assert_eq!(v.id("a"), 2);
    assert_eq!(v.id("d"), 5);
    assert_eq!(v.word(2), Some("a"));
    assert_eq!(v.word(6), None);
    assert_eq!(v.word(u32::MAX), None);
    // Ties broken by byte order, whatever the input order.
    let w = Vocab::build(["z y x w", "w x y z"], 1, 100).unwrap();
    assert_eq!(w.words()[2..], ["w", "x", "y", "z"]);
    let w2 = Vocab::build(["y w z x", "x z w y"], 1, 100).unwrap();
    assert_eq!(w, w2);
}

#[test]
fn vocab_min_count_and_max_size() {
    let text = ["a a a a b b b c c d", "a b c e"];
    let v = Vocab::build(text, 3, 100).unwrap();
    assert_eq!(v.words()[2..], ["a", "b", "c"]);
    // 0 and 1 keep everything.
    assert_eq!(
        Vocab::build(text, 0, 100).unwrap(),
        Vocab::build(text, 1, 100).unwrap()
    );
    assert_eq!(Vocab::build(text, 1, 100).unwrap().len(), 7);
    // max_size counts the special tokens.
    let v = Vocab::build(text, 1, 4).unwrap();
    assert_eq!(v.words(), [PAD_TOKEN, UNK_TOKEN, "a", "b"]);
    let v = Vocab::build(text, 1, 2).unwrap();
    assert_eq!(v.len(), 2);
    // A min_count nothing reaches leaves the special tokens only.
    assert_eq!(Vocab::build(text, 1000, 100).unwrap().len(), 2);
    assert_eq!(Vocab::build(Vec::<String>::new(), 1, 100).unwrap().len(), 2);
}

#[test]
fn vocab_bad_sizes_are_errors() {
    for max_size in [0, 1, MAX_VOCAB_SIZE + 1] {
        match Vocab::build(["a"], 1, max_size) {
            Err(Error::InvalidArgument { op, msg }) => {
                assert_eq!(op, "Vocab::build");
                assert!(msg.contains(&max_size.to_string()), "{msg}");
            }
            other => panic!("max_size {max_size}: {other:?}"),
        }
    }
}

#[test]
fn vocab_encodes_with_unk_and_truncation() {
    let v = Vocab::build(["the cat sat on the mat ."], 1, 100).unwrap();
    let ids = v.encode("The DOG sat.", 10);
    assert_eq!(ids, [v.id("the"), UNK, v.id("sat"), v.id(".")]);
    assert_eq!(v.encode("The DOG sat.", 2), [v.id("the"), UNK]);
    assert!(v.encode("The cat", 0).is_empty());
    assert!(v.encode("", 5).is_empty());
    assert_eq!(v.decode(&[v.id("the"), UNK, PAD, 9999]), "the <unk> <unk>");
    assert_eq!(v.id("The"), UNK, "id looks tokens up as given");
}

/// The n-grams of one token with `min_n..=max_n` characters, as buckets.
fn buckets_of(sw: &Subwords, token: &str) -> Vec<u32> {
    let mut out = Vec::new();
    sw.for_each_bucket(token, |b| out.push(b));
    out
}

#[test]
fn subwords_are_fasttext_hashed_character_ngrams() {
    // 32-bit FNV-1a: "a" is 0xe40c292c, "foobar" 0xbf9cf968 (the published test values).
    let one = Subwords {
        buckets: 1 << 22,
        min_n: 1,
        max_n: 1,
    };
    let fnv_a = 0xe40c_292c_u32 % (1 << 22);
    // "<a>": "<", "a", ">".
    assert_eq!(buckets_of(&one, "a")[1], fnv_a);
    assert_eq!(buckets_of(&one, "a").len(), 3);
    let six = Subwords {
        buckets: 1 << 22,
        min_n: 6,
        max_n: 6,
    };
    // "<foobar>" has 3 six-grams; the middle one is "foobar".
    assert_eq!(buckets_of(&six, "foobar"), {
        let mut want = buckets_of(&six, "foobar");
        want[1] = 0xbf9c_f968 % (1 << 22);
        want
    });
    // Characters, not bytes: "<né>" has 4 characters, so 2 three-grams and 1 four-gram.
    let sw = Subwords {
        buckets: 97,
        min_n: 3,
        max_n: 6,
    };
    assert_eq!(buckets_of(&sw, "né").len(), 3);
    // "<movie>": 5 + 4 + 3 + 2 n-grams of 3 to 6 characters, every bucket in range.
    let b = buckets_of(&sw, "movie");
    assert_eq!(b.len(), 14);
    assert!(b.iter().all(|&x| x < 97));
    // Shared n-grams: "movies" repeats the first n-grams of "movie" ("<mo", "mov", ...).
    assert_eq!(buckets_of(&sw, "movies")[..3], b[..3]);
    for bad in [
        Subwords { buckets: 0, ..sw },
        Subwords { min_n: 0, ..sw },
        Subwords {
            min_n: 4,
            max_n: 3,
            ..sw
        },
        Subwords { max_n: 17, ..sw },
    ] {
        assert!(bad.validate().is_err(), "{bad:?}");
    }
}

#[test]
fn vocab_with_subwords_encodes_each_token_then_its_ngrams() {
    let sw = Subwords {
        buckets: 50,
        min_n: 3,
        max_n: 4,
    };
    let words = Vocab::build(["the cat sat ."], 1, 100).unwrap();
    let v = words.clone().with_subwords(sw).unwrap();
    assert_eq!(v.word_count(), words.len());
    assert_eq!(v.len(), words.len() + 50);
    assert_eq!(v.subwords(), Some(sw));
    let base = v.word_count() as u32;
    // "the" (known): its id, then "<th", "the", "he>", "<the", "the>".
    let mut want = vec![v.id("the")];
    want.extend(buckets_of(&sw, "the").iter().map(|b| base + b));
    assert_eq!(want.len(), 6);
    // "dogs" (unknown): UNK, then its own n-grams, so two unknown words differ.
    want.push(UNK);
    want.extend(buckets_of(&sw, "dogs").iter().map(|b| base + b));
    assert_eq!(v.encode("The dogs", 100), want);
    assert_ne!(v.encode("dogs", 100), v.encode("cats", 100));
    assert_eq!(words.encode("dogs", 100), words.encode("cats", 100));
    // max_len counts ids and may cut a token's n-grams.
    assert_eq!(v.encode("The dogs", 8), want[..8]);
    assert!(v
        .encode("The dogs", 100)
        .iter()
        .all(|&id| (id as usize) < v.len()));
    // decode shows the words only.
    assert_eq!(v.decode(&v.encode("the cat dogs", 100)), "the cat <unk>");
    // JSON keeps the setting; a vocabulary without it reads as before.
    let json = v.to_json();
    assert!(json.contains("\"subwords\""), "{json}");
    assert_eq!(Vocab::from_json(&json).unwrap(), v);
    assert_eq!(Vocab::from_json(&words.to_json()).unwrap().subwords(), None);
    let bad = json.replace("\"buckets\":50", "\"buckets\":0");
    let err = Vocab::from_json(&bad).unwrap_err().to_string();
    assert!(err.contains("0 buckets"), "{err}");
    let bad = json.replace("\"max_n\":4", "\"max_n\":\"x\"");
    let err = Vocab::from_json(&bad).unwrap_err().to_string();
    assert!(err.contains("subwords"), "{err}");
}

#[test]
fn vocab_json_round_trip() {
    let docs = builtin_corpus(&CorpusConfig {
        documents: 40,
        seed: 3,
    });
    let v = Vocab::build(docs.iter().flat_map(|d| &d.sentences), 2, 300).unwrap();
    let json = v.to_json();
    let back = Vocab::from_json(&json).unwrap();
    assert_eq!(back, v);
    assert_eq!(back.id("the"), v.id("the"));
    // Non-ASCII and quotes survive JSON escaping.
    let v = Vocab::build(["\"quoted\" \\ naïve 你好 don't"], 1, 100).unwrap();
    assert_eq!(Vocab::from_json(&v.to_json()).unwrap(), v);
}

#[test]
fn vocab_bad_json_is_an_error() {
    let ok = r#"{"format":"selfsup-vocab","version":1,"words":["<pad>","<unk>","a","b"]}"#;
    assert_eq!(Vocab::from_json(ok).unwrap().len(), 4);
    let bad: &[(&str, &str)] = &[
        ("", "not JSON"),
        ("{", "not JSON"),
        ("[1, 2]", "not a JSON object"),
        ("null", "not a JSON object"),
        (r#"{"version":1,"words":["<pad>","<unk>"]}"#, "format"),
        (
            r#"{"format":"other","version":1,"words":["<pad>","<unk>"]}"#,
            "format",
        ),
        (
            r#"{"format":"selfsup-vocab","words":["<pad>","<unk>"]}"#,
            "version",
        ),
        (
            r#"{"format":"selfsup-vocab","version":2,"words":["<pad>","<unk>"]}"#,
            "version 2",
        ),
        (
            r#"{"format":"selfsup-vocab","version":-1,"words":["<pad>","<unk>"]}"#,
            "version",
        ),
        (r#"{"format":"selfsup-vocab","version":1}"#, "words"),
        (
            r#"{"format":"selfsup-vocab","version":1,"words":"a"}"#,
            "words",
        ),
        (
            r#"{"format":"selfsup-vocab","version":1,"words":[]}"#,
            "special",
        ),
        (
            r#"{"format":"selfsup-vocab","version":1,"words":["<pad>"]}"#,
            "special",
        ),
        (
            r#"{"format":"selfsup-vocab","version":1,"words":["<unk>","<pad>","a"]}"#,
            "ids 0 and 1",
        ),
        (
            r#"{"format":"selfsup-vocab","version":1,"words":["a","b","c"]}"#,
            "ids 0 and 1",
        ),
        (
            r#"{"format":"selfsup-vocab","version":1,"words":["<pad>","<unk>","a","a"]}"#,
            "duplicate word \"a\"",
        ),
        (
            r#"{"format":"selfsup-vocab","version":1,"words":["<pad>","<unk>","<pad>"]}"#,
            "duplicate",
        ),
        (
            r#"{"format":"selfsup-vocab","version":1,"words":["<pad>","<unk>",""]}"#,
            "empty",
        ),
        (
            r#"{"format":"selfsup-vocab","version":1,"words":["<pad>","<unk>","a b"]}"#,
            "whitespace",
        ),
        (
            r#"{"format":"selfsup-vocab","version":1,"words":["<pad>","<unk>",3]}"#,
            "not a string",
        ),
    ];
    for (json, want) in bad {
        match Vocab::from_json(json) {
            Err(Error::InvalidArgument { op, msg }) => {
                assert_eq!(op, "Vocab::from_json");
                assert!(msg.contains(want), "{json}: {msg:?} lacks {want:?}");
            }
            other => panic!("{json}: {other:?}"),
        }
    }
    let long = format!(
        r#"{{"format":"selfsup-vocab","version":1,"words":["<pad>","<unk>","{}"]}}"#,
        "x".repeat(5000)
    );
    assert!(matches!(
        Vocab::from_json(&long),
        Err(Error::InvalidArgument { .. })
    ));
}

// ---------------------------------------------------------------- reading from disk

fn names(docs: &[selfsup::text::Document]) -> Vec<&str> {
    docs.iter().map(|d| d.name.as_str()).collect()
}

#[test]
fn reads_a_folder_recursively_in_path_order() {
    let dir = TempDir::new("folder");
    dir.write("b.txt", b"Second file. It has two sentences.");
    dir.write(
        "a.txt",
        "\u{feff}First file here. Dr. Who\nwas wrapped.\n\nNew paragraph".as_bytes(),
    );
    dir.write("sub/c.md", b"In a subfolder. Still read.");
    dir.write("empty.txt", b"");
    dir.write("blank.txt", b"  \n\n\t ");
    dir.write("short.txt", b"Only one sentence here.");
    dir.write(".hidden", &[0xff, 0xfe, 0x00]);
    let report = read_corpus_report(&dir.0).unwrap();
    assert_eq!(names(&report.documents), ["a.txt", "b.txt", "sub/c.md"]);
    assert_eq!(
        report.documents[0].sentences,
        ["First file here.", "Dr. Who was wrapped.", "New paragraph"]
    );
    assert_eq!(
        report.documents[1].sentences,
        ["Second file.", "It has two sentences."]
    );
    assert_eq!(report.files, 6);
    assert_eq!(report.skipped_empty, 2);
    assert_eq!(report.skipped_short, 1);
    assert_eq!(report.skipped_binary, 0);
    assert_eq!(read_corpus(&dir.0).unwrap(), report.documents);
    assert_eq!(MIN_DOCUMENT_SENTENCES, 2);
}

#[test]
fn reads_a_single_file() {
    let dir = TempDir::new("single");
    let f = dir.write("story.txt", "One. Two. Three — ünïcode.".as_bytes());
    let docs = read_corpus(&f).unwrap();
    assert_eq!(names(&docs), ["story.txt"]);
    assert_eq!(docs[0].sentences, ["One.", "Two.", "Three — ünïcode."]);
}

#[test]
fn non_utf8_file_is_an_error_naming_it_and_the_offset() {
    let dir = TempDir::new("utf8");
    let bad = dir.write("z/bad.txt", b"Valid start. \xc3\x28 broken.");
    match read_corpus(&bad) {
        Err(DataError::Format { path, problem }) => {
            assert_eq!(path, bad);
            assert!(problem.contains("UTF-8"), "{problem}");
            assert!(problem.contains("byte offset 13"), "{problem}");
        }
        other => panic!("{other:?}"),
    }
    let msg = read_corpus(&bad).unwrap_err().to_string();
    assert!(msg.contains("bad.txt") && msg.contains("13"), "{msg}");
}

#[test]
fn non_utf8_files_of_a_folder_are_skipped_counted_and_named() {
    let dir = TempDir::new("utf8dir");
    dir.write("a.txt", b"Good file. Fine text.");
    dir.write("z/bad.txt", b"Valid start. \xc3\x28 broken.");
    dir.write("z/changelog.gz", &[0x1f, 0x8b, 0x08, 0x00, 0xff]);
    let report = read_corpus_report(&dir.0).unwrap();
    assert_eq!(names(&report.documents), ["a.txt"]);
    assert_eq!(report.files, 3);
    assert_eq!(report.skipped_binary, 2);
    let first = report.first_binary.unwrap();
    assert!(
        first.contains("bad.txt") && first.contains("byte offset 13"),
        "{first}"
    );
    // Nothing but binary files: no documents, an error that says why.
    let bin = TempDir::new("bindir");
    bin.write("x.gz", &[0x1f, 0x8b]);
    let msg = read_corpus(&bin.0).unwrap_err().to_string();
    assert!(msg.contains("1 not UTF-8"), "{msg}");
}

#[test]
fn nonexistent_path_is_an_io_error_naming_it() {
    let dir = TempDir::new("missing");
    let missing = dir.0.join("no_such_corpus");
    match read_corpus(&missing) {
        Err(DataError::Io { path, source }) => {
            assert_eq!(path, missing);
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("{other:?}"),
    }
    let msg = read_corpus(&missing).unwrap_err().to_string();
    assert!(msg.contains("no_such_corpus"), "{msg}");
}

#[test]
fn a_corpus_without_documents_is_an_error_naming_the_path() {
    let dir = TempDir::new("nodocs");
    dir.write("empty.txt", b"");
    dir.write("short.txt", b"Just one.");
    let err = read_corpus(&dir.0).unwrap_err();
    match &err {
        DataError::Format { path, problem } => {
            assert_eq!(path, &dir.0);
            assert!(problem.contains("no documents"), "{problem}");
            assert!(problem.contains("2 file(s)"), "{problem}");
        }
        other => panic!("{other:?}"),
    }
    // An empty folder, and a single short file, too.
    let empty = TempDir::new("emptydir");
    assert!(matches!(
        read_corpus(&empty.0),
        Err(DataError::Format { .. })
    ));
    let one = dir.0.join("short.txt");
    match read_corpus(&one) {
        Err(DataError::Format { path, .. }) => assert_eq!(path, one),
        other => panic!("{other:?}"),
    }
}

#[test]
fn oversized_file_is_an_error_naming_it() {
    let dir = TempDir::new("big");
    let big = dir.0.join("big.txt");
    let f = std::fs::File::create(&big).unwrap();
    // A sparse file: no disk space used.
    f.set_len(MAX_FILE_BYTES + 1).unwrap();
    drop(f);
    match read_corpus(&dir.0) {
        Err(DataError::Format { path, problem }) => {
            assert_eq!(path, big);
            assert!(problem.contains("larger than"), "{problem}");
        }
        other => panic!("{other:?}"),
    }
}

// ---------------------------------------------------------------- built-in corpus

#[test]
fn builtin_corpus_is_deterministic() {
    let cfg = CorpusConfig {
        documents: 64,
        seed: 11,
    };
    let a = builtin_corpus(&cfg);
    assert_eq!(a.len(), 64);
    assert_eq!(a, builtin_corpus(&cfg));
    // Document i depends on (seed, i) only.
    assert_eq!(a[37], builtin_document(11, 37));
    let longer = builtin_corpus(&CorpusConfig {
        documents: 100,
        seed: 11,
    });
    assert_eq!(a[..], longer[..64]);
    for (i, d) in a.iter().enumerate() {
        assert_eq!(d.topic, topic_of(11, i as u64));
    }
    // Another seed, another corpus.
    let b = builtin_corpus(&CorpusConfig {
        documents: 64,
        seed: 12,
    });
    let same = a.iter().zip(&b).filter(|(x, y)| x == y).count();
    assert!(same < 4, "{same} identical documents");
    assert_eq!(CorpusConfig::default().documents, 2000);
}

#[test]
fn builtin_corpus_shape_and_balance() {
    let docs = builtin_corpus(&CorpusConfig {
        documents: 800,
        seed: 5,
    });
    let mut per_topic = vec![0usize; TOPICS.len()];
    let mut lengths = HashSet::new();
    for d in &docs {
        per_topic[d.topic as usize] += 1;
        let n = d.sentences.len();
        assert!((MIN_SENTENCES..=MAX_SENTENCES).contains(&n), "{n}");
        lengths.insert(n);
        for s in &d.sentences {
            assert!(!s.contains('{') && !s.contains('}'), "unfilled slot: {s}");
            assert!(s.ends_with('.'), "{s}");
            assert!(s.chars().next().is_some_and(char::is_uppercase), "{s}");
            assert!(!s.contains("  "), "{s}");
        }
        // Every document splits back into its own sentences.
        assert_eq!(split_sentences(&d.sentences.join(" ")), d.sentences);
        assert_eq!(split_sentences(&d.sentences.join("\n")), d.sentences);
    }
    // Exact balance: 800 is a multiple of the topic count.
    assert!(
        per_topic.iter().all(|&c| c == 800 / TOPICS.len()),
        "{per_topic:?}"
    );
    assert_eq!(
        lengths.len(),
        MAX_SENTENCES - MIN_SENTENCES + 1,
        "{lengths:?}"
    );
    // Topics are not predictable from the index alone.
    let first: Vec<u32> = docs[..TOPICS.len()].iter().map(|d| d.topic).collect();
    let second: Vec<u32> = docs[TOPICS.len()..2 * TOPICS.len()]
        .iter()
        .map(|d| d.topic)
        .collect();
    assert_ne!(first, second);
}

#[test]
fn builtin_corpus_has_shared_and_topic_words() {
    let docs = builtin_corpus(&CorpusConfig {
        documents: 400,
        seed: 9,
    });
    // Per topic, the set of tokens used.
    let mut vocab: Vec<HashSet<String>> = vec![HashSet::new(); TOPICS.len()];
    for d in &docs {
        for s in &d.sentences {
            vocab[d.topic as usize].extend(tokenize(s));
        }
    }
    let shared: HashSet<&String> = vocab[0]
        .iter()
        .filter(|w| vocab.iter().all(|v| v.contains(*w)))
        .collect();
    // Names, openers and function words are shared by every topic...
    assert!(shared.len() >= 20, "{} shared tokens", shared.len());
    assert!(shared.contains(&"the".to_string()));
    // ...and each topic has words of its own.
    for (t, v) in vocab.iter().enumerate() {
        let own = v
            .iter()
            .filter(|w| {
                vocab
                    .iter()
                    .enumerate()
                    .all(|(u, o)| u == t || !o.contains(*w))
            })
            .count();
        assert!(own >= 15, "{}: {own} own tokens", TOPICS[t]);
    }
    // A whole corpus makes a small vocabulary.
    let v = Vocab::build(docs.iter().flat_map(|d| &d.sentences), 1, 100_000).unwrap();
    assert!(v.len() > 200 && v.len() < 2000, "{}", v.len());
}

#[test]
fn builtin_documents_follow_their_script_order() {
    // The first sentence of a document is more often from the start of the script than
    // its last: on cooking documents, "decided to make"/"recipe" opens and "served" or
    // "washed"/"leftover" closes far more often than the reverse.
    let docs = builtin_corpus(&CorpusConfig {
        documents: 800,
        seed: 21,
    });
    let cooking = docs
        .iter()
        .filter(|d| TOPICS[d.topic as usize] == "cooking");
    let (mut early_first, mut early_last) = (0, 0);
    for d in cooking {
        let early = |s: &str| s.contains("decided to make") || s.contains("recipe");
        early_first += usize::from(early(&d.sentences[0]));
        early_last += usize::from(early(d.sentences.last().unwrap()));
    }
    assert!(
        early_first > 3 * early_last + 10,
        "{early_first} vs {early_last}"
    );
}

#[test]
fn read_corpus_reads_a_written_builtin_corpus() {
    let dir = TempDir::new("roundtrip");
    let docs = builtin_corpus(&CorpusConfig {
        documents: 12,
        seed: 1,
    });
    for (i, d) in docs.iter().enumerate() {
        dir.write(&format!("doc{i:02}.txt"), d.sentences.join("\n").as_bytes());
    }
    let back = read_corpus(Path::new(&dir.0)).unwrap();
    assert_eq!(back.len(), 12);
    for (b, d) in back.iter().zip(&docs) {
        assert_eq!(b.sentences, d.sentences);
    }
}
