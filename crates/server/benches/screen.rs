//! What screening one message costs, rule by rule: the content filters run on the send path of
//! every message, so their cost per message is what moderation adds to a send. Each line is the
//! median over several passes of the mean time per message over 1,200 ordinary chat messages
//! (80–150 characters), against the same messages with no rules, measured in the same run.
//!
//! `cargo bench -p switchboard --bench screen`

use std::hint::black_box;
use std::time::Instant;

use switchboard::moderation::filter::Filter;
use switchboard_protocol::rest::{FilterAction, Filters};

const LINES: [&str; 12] = [
    "are we still on for lunch tomorrow?",
    "I think the new build looks good, but let me check again after standup.",
    "thanks, that fixed it for me",
    "can someone review my pull request when you have a minute?",
    "the meeting moved to 3pm, same room as last week",
    "just landed, will be online in an hour or so",
    "does anyone know why the staging deploy is failing?",
    "great work on the release everyone!",
    "I'll be out on Friday, back on Monday morning",
    "sounds good to me, let's ship it",
    "can you send me the link to the design doc?",
    "weather is terrible here today, working from home",
];

/// 1,200 messages of whole sentences, at least 80 characters each.
fn messages() -> Vec<String> {
    (0..1200)
        .map(|n| {
            let mut out = format!("Person{},", n % 40);
            let mut k = n;
            while out.len() < 80 {
                out.push(' ');
                out.push_str(LINES[k % LINES.len()]);
                k += 5;
            }
            out
        })
        .collect()
}

/// 1,000 made-up words (5–10 letters), as an operator's list would be.
fn words() -> Vec<String> {
    let mut seed = 7u64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    (0..1000)
        .map(|_| {
            let len = 5 + (next() % 6) as usize;
            (0..len).map(|_| char::from(b'a' + (next() % 26) as u8)).collect()
        })
        .collect()
}

/// Median of 7 passes of the mean nanoseconds per message.
fn ns_per_message(filter: &Filter, msgs: &[String]) -> f64 {
    let mut passes = Vec::new();
    for _ in 0..7 {
        let started = Instant::now();
        for m in msgs {
            black_box(filter.screen(black_box(m)).is_ok());
        }
        passes.push(started.elapsed().as_nanos() as f64 / msgs.len() as f64);
    }
    passes.sort_by(f64::total_cmp);
    passes[passes.len() / 2]
}

fn main() {
    let msgs = messages();
    let patterns: Vec<String> = [
        r"(?i)buy\s+now",
        r"(?i)free\s+money",
        r"\b\d{3}-\d{4}\b",
        r"(?i)crypto\s+giveaway",
        r"(?i)click\s+here",
        r"(?i)onlyfans",
        r"(?i)whatsapp\s+me",
        r"(?i)dm\s+me\s+for",
        r"(?i)limited\s+offer",
    ]
    .iter()
    .map(|p| (*p).to_owned())
    .collect();
    let domains: Vec<String> = (0..100).map(|i| format!("spam{i}.example")).collect();
    let cases: Vec<(&str, Filters)> = vec![
        ("no rules (baseline)", Filters::default()),
        ("1,000 words", Filters { words: words(), ..Filters::default() }),
        ("9 patterns", Filters { patterns: patterns.clone(), ..Filters::default() }),
        (
            "100 denied domains + invites",
            Filters { deny_domains: domains.clone(), block_invites: true, ..Filters::default() },
        ),
        ("profanity (rustrict)", Filters { profanity: FilterAction::Block, ..Filters::default() }),
        (
            "all of the above",
            Filters {
                profanity: FilterAction::Block,
                words: words(),
                patterns,
                deny_domains: domains,
                block_invites: true,
                ..Filters::default()
            },
        ),
    ];
    println!("{:<32} {:>12} {:>10}", "rules", "ns/message", "x baseline");
    let mut base = None;
    for (name, spec) in cases {
        let filter = Filter::compile(&spec).expect("compiles");
        let ns = ns_per_message(&filter, &msgs);
        let b = *base.get_or_insert(ns);
        println!("{name:<32} {ns:>12.0} {:>10.1}", ns / b);
    }
}
