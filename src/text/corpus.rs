//! The built-in text corpus, generated in code from a seed: the default data of the text
//! method, which needs no download.
//!
//! Each document tells one short story about one of [`TOPICS`] (cooking, weather, football,
//! travel, computing, gardening, music, medicine). Every topic has a **script**: six or
//! seven stages in narrative order (for cooking: planning the dish, shopping, preparing, cooking,
//! seasoning, serving, cleaning up), each stage a few sentence templates whose slots
//! (`{dish}`, `{veg}`, ...) are filled from the topic's word lists. A document draws its
//! length (5 to 15 sentences, [`MIN_SENTENCES`] to [`MAX_SENTENCES`]) and then its
//! sentences' stages as a sorted random sample of the script's stages, so it walks the
//! script in order, lingering on some stages and skipping others.
//!
//! So the Quick Thoughts task (find a sentence's neighbours among other sentences) has two
//! signals: neighbours share the document's topic (and its filled-in words: the same
//! person, the same dish), and they come from the same or the next stage of the script.
//! Topic-neutral material shared by all topics keeps a bag of words from being a perfect
//! answer: people's names, times of day, adverbs, feelings, sentence openers ("Then,",
//! "After that,") on about a quarter of the sentences and, on about one sentence in twelve,
//! a topic-free aside ("Nobody was in a hurry.") in place of a script sentence.
//!
//! Every sentence is one sentence for [`split_sentences`](super::split::split_sentences)
//! (no abbreviations, a capital first letter, one final `.`), so the documents joined by
//! spaces split back into the same sentences.
//!
//! **Determinism.** Document `i` depends on `(seed, i)` only: its randomness comes from the
//! stream [`crate::rng::mix`]`(seed, [DOCUMENT_KEY, i])` and its topic from a permutation of
//! the topics drawn per block of `TOPICS.len()` indices, so topics are balanced (exactly,
//! when the document count is a multiple of `TOPICS.len()`) and generation runs in parallel
//! with identical results for any thread count.

use crate::rng::{mix, permutation, SplitMix64};
use rayon::prelude::*;

/// The topics of the built-in corpus; a document's [`LabeledDocument::topic`] indexes this.
pub const TOPICS: [&str; 8] = [
    "cooking",
    "weather",
    "football",
    "travel",
    "computing",
    "gardening",
    "music",
    "medicine",
];

/// The fewest sentences of a built-in document.
pub const MIN_SENTENCES: usize = 5;
/// The most sentences of a built-in document.
pub const MAX_SENTENCES: usize = 15;
/// The default seed of [`CorpusConfig`].
pub const DEFAULT_SEED: u64 = 0x5e1f_7e47_2026_1202;

/// The stream key of a document's randomness (`mix(seed, [DOCUMENT_KEY, i])`).
const DOCUMENT_KEY: u64 = 0x7465_7874;
/// The stream key of the per-block topic permutations (`mix(seed, [TOPIC_KEY, block])`).
const TOPIC_KEY: u64 = 0x0074_6f70_6963;

/// What to generate: how many documents, from which seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CorpusConfig {
    /// Number of documents.
    pub documents: usize,
    /// The seed every document derives from.
    pub seed: u64,
}

impl Default for CorpusConfig {
    /// 2000 documents (250 per topic) from [`DEFAULT_SEED`].
    fn default() -> Self {
        Self {
            documents: 2000,
            seed: DEFAULT_SEED,
        }
    }
}

/// A built-in document: its topic and its sentences, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabeledDocument {
    /// The index of the document's topic in [`TOPICS`].
    pub topic: u32,
    /// [`MIN_SENTENCES`] to [`MAX_SENTENCES`] sentences, in narrative order.
    pub sentences: Vec<String>,
}

/// The built-in corpus: documents `0..cfg.documents` of [`builtin_document`].
pub fn builtin_corpus(cfg: &CorpusConfig) -> Vec<LabeledDocument> {
    (0..cfg.documents as u64)
        .into_par_iter()
        .map(|i| builtin_document(cfg.seed, i))
        .collect()
}

/// The topic of document `index` under `seed` (an index into [`TOPICS`]), without
/// generating its text.
pub fn topic_of(seed: u64, index: u64) -> u32 {
    let n = TOPICS.len() as u64;
    let perm = permutation(TOPICS.len(), mix(seed, &[TOPIC_KEY, index / n]));
    perm[(index % n) as usize] as u32
}

/// Document `index` of the built-in corpus under `seed` (see the
/// [module documentation](self)); it depends on `(seed, index)` only.
pub fn builtin_document(seed: u64, index: u64) -> LabeledDocument {
    let topic = topic_of(seed, index);
    let spec = &SPECS[topic as usize];
    let mut rng = SplitMix64::new(mix(seed, &[DOCUMENT_KEY, index]));
    let n = MIN_SENTENCES + rng.below(MAX_SENTENCES - MIN_SENTENCES + 1);
    let mut stages: Vec<usize> = (0..n).map(|_| rng.below(spec.stages.len())).collect();
    stages.sort_unstable();
    // The story's cast: one person and one value per topic slot, drawn once, so the
    // sentences of a document agree (the same cook, the same dish); a second draw of a
    // slot in one sentence (`{veg}` twice) takes a fresh value.
    let cast = Cast::draw(spec, &mut rng);
    let mut sentences = Vec::with_capacity(n);
    // Per stage, a bit per template already used in this document: a stage's templates
    // are used without repetition until all have been, then afresh (never the one just
    // used twice in a row).
    let mut used = vec![0u32; spec.stages.len()];
    let mut last: Option<(usize, usize)> = None;
    let mut used_asides = 0u32;
    for (k, &stage) in stages.iter().enumerate() {
        let mut s = String::new();
        if k > 0 && rng.below(12) == 0 {
            // Asides without repetition until all have been used, then afresh.
            if used_asides == (1 << ASIDES.len()) - 1 {
                used_asides = 0;
            }
            let free: Vec<usize> = (0..ASIDES.len())
                .filter(|&a| used_asides & (1 << a) == 0)
                .collect();
            let a = free[rng.below(free.len())];
            used_asides |= 1 << a;
            fill(ASIDES[a], spec, &cast, &mut rng, &mut s);
        } else {
            let templates = spec.stages[stage];
            let all = (1u32 << templates.len()) - 1;
            if used[stage] == all {
                used[stage] = match last {
                    Some((st, t)) if st == stage && templates.len() > 1 => 1 << t,
                    _ => 0,
                };
            }
            let free: Vec<usize> = (0..templates.len())
                .filter(|&t| used[stage] & (1 << t) == 0)
                .collect();
            let t = free[rng.below(free.len())];
            used[stage] |= 1 << t;
            last = Some((stage, t));
            if k > 0 && rng.below(4) == 0 {
                s.push_str(OPENERS[rng.below(OPENERS.len())]);
                s.push_str(", ");
            }
            fill(templates[t], spec, &cast, &mut rng, &mut s);
        }
        sentences.push(capitalize(&s));
    }
    LabeledDocument { topic, sentences }
}

/// A topic's script and word lists.
struct TopicSpec {
    /// Slot name to the words that fill it.
    slots: &'static [(&'static str, &'static [&'static str])],
    /// The stages, in narrative order, each a list of 1 to 31 sentence templates (one bit
    /// each in [`builtin_document`]'s per-stage mask).
    stages: &'static [&'static [&'static str]],
}

/// A document's fixed choices: the first use of each slot in a document takes these.
struct Cast {
    /// The person of the story (`{name}`).
    name: &'static str,
    /// One value per topic slot, in the order of [`TopicSpec::slots`].
    values: Vec<&'static str>,
}

impl Cast {
    /// Draws a cast for `spec`.
    fn draw(spec: &TopicSpec, rng: &mut SplitMix64) -> Cast {
        let name = NAMES[rng.below(NAMES.len())];
        let values = spec
            .slots
            .iter()
            .map(|(_, words)| words[rng.below(words.len())])
            .collect();
        Cast { name, values }
    }
}

/// Appends `template` with its slots filled to `out`. The first `{slot}` of a kind in the
/// template takes the document's cast; a repeated one takes a fresh random value. An
/// unknown slot (a bug in the tables, caught by the tests) is written as its name.
fn fill(template: &str, spec: &TopicSpec, cast: &Cast, rng: &mut SplitMix64, out: &mut String) {
    let mut used: Vec<&str> = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            out.push_str(&rest[open..]);
            return;
        };
        let slot = &after[..close];
        let repeated = used.contains(&slot);
        used.push(slot);
        let word = if slot == "name" {
            if repeated {
                NAMES[rng.below(NAMES.len())]
            } else {
                cast.name
            }
        } else if let Some(k) = spec.slots.iter().position(|(s, _)| *s == slot) {
            if repeated {
                let words = spec.slots[k].1;
                words[rng.below(words.len())]
            } else {
                cast.values[k]
            }
        } else if let Some((_, words)) = SHARED_SLOTS.iter().find(|(s, _)| *s == slot) {
            words[rng.below(words.len())]
        } else {
            slot
        };
        out.push_str(word);
        rest = &after[close + 1..];
    }
    out.push_str(rest);
}

/// `s` with its first character uppercased.
fn capitalize(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// People's names, shared by all topics (`{name}`).
const NAMES: &[&str] = &[
    "Anna", "Tom", "Maria", "David", "Sofia", "Omar", "Lena", "Peter", "Grace", "Ivan", "Mei",
    "Lucas", "Amara", "Jonas", "Priya", "Carlos",
];

/// Topic-neutral slots, drawn afresh at every use.
const SHARED_SLOTS: &[(&str, &[&str])] = &[
    (
        "time",
        &[
            "that morning",
            "on Sunday",
            "after lunch",
            "in the evening",
            "this week",
            "on Saturday",
            "before noon",
        ],
    ),
    (
        "adv",
        &[
            "quite",
            "really",
            "rather",
            "very",
            "surprisingly",
            "fairly",
        ],
    ),
    (
        "feel",
        &[
            "happy", "tired", "nervous", "proud", "calm", "curious", "relieved",
        ],
    ),
    ("num", &["two", "three", "four", "five", "six"]),
];

/// Topic-neutral sentence openers, put before about a quarter of the sentences.
const OPENERS: &[&str] = &[
    "then",
    "after that",
    "meanwhile",
    "soon",
    "of course",
    "as usual",
    "later",
    "in the meantime",
];

/// Topic-free asides that replace about one script sentence in twelve.
const ASIDES: &[&str] = &[
    "{name} said it was {adv} hard work.",
    "nobody was in a hurry.",
    "it was a {adv} long day for everyone.",
    "{name} laughed about it much later.",
    "everyone agreed that it could have gone worse.",
    "{name} felt {adv} {feel} about the whole thing.",
    "a friend called {name} to ask how things were going.",
];

/// The topics' scripts, in the order of [`TOPICS`].
static SPECS: [TopicSpec; 8] = [
    // cooking
    TopicSpec {
        slots: &[
            (
                "dish",
                &[
                    "soup",
                    "stew",
                    "curry",
                    "risotto",
                    "pie",
                    "frittata",
                    "pasta sauce",
                ],
            ),
            (
                "veg",
                &[
                    "onions",
                    "carrots",
                    "tomatoes",
                    "peppers",
                    "mushrooms",
                    "potatoes",
                    "leeks",
                ],
            ),
            (
                "vessel",
                &["pan", "pot", "skillet", "wok", "casserole dish"],
            ),
            (
                "spice",
                &[
                    "salt", "pepper", "cumin", "basil", "paprika", "thyme", "garlic",
                ],
            ),
            (
                "shop",
                &["market", "grocery store", "farm shop", "corner shop"],
            ),
            (
                "texture",
                &["golden", "tender", "thick", "creamy", "rich", "smooth"],
            ),
        ],
        stages: &[
            &[
                "{name} decided to make a {dish} for dinner {time}.",
                "{name} looked up an old family recipe for {dish}.",
                "{name} wanted to cook a {dish} for some friends.",
            ],
            &[
                "{name} went to the {shop} to buy fresh {veg}.",
                "at the {shop}, {name} picked up some {veg} and a jar of {spice}.",
                "the {shop} had {adv} cheap {veg} that day.",
            ],
            &[
                "{name} washed the {veg} and chopped them on the board.",
                "the {veg} were peeled and cut into small pieces.",
                "{name} put a {vessel} on the stove to warm up.",
            ],
            &[
                "the {veg} went into the hot {vessel} with a little oil.",
                "{name} stirred the {dish} slowly over a low heat.",
                "the {dish} simmered for twenty minutes until it was {texture}.",
            ],
            &[
                "{name} added a pinch of {spice} and tasted the {dish}.",
                "it needed more {spice}, so {name} added some.",
                "the smell of {spice} filled the whole kitchen.",
            ],
            &[
                "{name} served the {dish} in warm bowls.",
                "everyone said the {dish} was {adv} good.",
                "the {dish} was {texture} and full of flavour.",
            ],
            &[
                "afterwards, {name} washed the {vessel} and the plates.",
                "the leftover {dish} went into the fridge for tomorrow.",
                "{name} wiped the counter and put the knives away.",
            ],
        ],
    },
    // weather
    TopicSpec {
        slots: &[
            ("sky", &["grey", "cloudy", "clear", "pale", "dark", "hazy"]),
            ("wind", &["gusts", "gale", "wind", "squalls", "storm winds"]),
            ("precip", &["rain", "snow", "hail", "drizzle", "sleet"]),
            (
                "temp",
                &["cold", "warm", "mild", "freezing", "humid", "hot"],
            ),
            (
                "region",
                &[
                    "the coast",
                    "the valley",
                    "the hills",
                    "the city",
                    "the north",
                    "the islands",
                ],
            ),
        ],
        stages: &[
            &[
                "the forecast for {region} promised {precip} {time}.",
                "the radio warned of strong {wind} across {region}.",
                "{name} checked the forecast before leaving the house.",
            ],
            &[
                "the sky over {region} was {sky} and still.",
                "it was a {temp} morning with hardly any wind.",
                "{name} noticed the clouds building in the west.",
            ],
            &[
                "the {wind} grew stronger through the afternoon.",
                "the air turned {temp} and the clouds grew {sky}.",
                "the barometer fell {adv} fast.",
            ],
            &[
                "heavy {precip} began to fall on {region}.",
                "the {precip} came down for hours without a break.",
                "thunder rolled over {region} and the {precip} got worse.",
            ],
            &[
                "by night the {wind} had blown down several trees.",
                "the roads in {region} were flooded after the storm.",
                "the temperature dropped to {num} degrees overnight.",
            ],
            &[
                "the next morning the sky was {sky} again.",
                "the sun came out and the puddles began to dry.",
                "{name} went outside to look at the damage from the storm.",
            ],
        ],
    },
    // football
    TopicSpec {
        slots: &[
            (
                "team",
                &[
                    "United",
                    "Rovers",
                    "City",
                    "Athletic",
                    "Wanderers",
                    "Albion",
                ],
            ),
            (
                "player",
                &[
                    "the striker",
                    "the goalkeeper",
                    "the captain",
                    "the young winger",
                    "the defender",
                ],
            ),
            (
                "action",
                &["header", "volley", "penalty", "free kick", "long shot"],
            ),
            ("ground", &["stadium", "old ground", "arena"]),
        ],
        stages: &[
            &[
                "{name} bought tickets to watch {team} play {time}.",
                "the fans of {team} gathered outside the {ground} before the match.",
                "{team} had not won a game in a month.",
            ],
            &[
                "the referee blew the whistle and the match began.",
                "{team} kicked off in front of a {adv} loud crowd.",
                "the players ran out onto the pitch to loud cheers.",
            ],
            &[
                "{player} of {team} scored with a {action} after ten minutes.",
                "the first half was {adv} tight and full of fouls.",
                "{player} was shown a yellow card for a late tackle.",
            ],
            &[
                "at half time the coach spoke to the players in the dressing room.",
                "the score was level at the break.",
                "the crowd sang loudly during the half time break.",
            ],
            &[
                "early in the second half, {player} hit the post.",
                "{team} equalised with a {action} from the edge of the box.",
                "{player} scored with a late {action} in the final minutes.",
            ],
            &[
                "the final whistle went and {team} had won by {num} goals.",
                "the fans of {team} celebrated long into the night.",
                "{name} said it was the best match of the season.",
            ],
        ],
    },
    // travel
    TopicSpec {
        slots: &[
            (
                "city",
                &[
                    "Lisbon", "Kyoto", "Cairo", "Oslo", "Lima", "Vienna", "Hanoi",
                ],
            ),
            (
                "transport",
                &["train", "plane", "ferry", "coach", "night train"],
            ),
            ("bag", &["suitcase", "backpack", "travel bag"]),
            (
                "sight",
                &[
                    "old cathedral",
                    "harbour",
                    "museum",
                    "castle",
                    "market square",
                    "botanical garden",
                ],
            ),
            (
                "lodging",
                &["hotel", "guesthouse", "hostel", "small apartment"],
            ),
        ],
        stages: &[
            &[
                "{name} had planned a trip to {city} for months.",
                "{name} booked a room in a {lodging} near the centre of {city}.",
                "{name} compared the prices of the {transport} and the {transport}.",
            ],
            &[
                "{name} packed a {bag} with clothes, a map and a passport.",
                "the {bag} was {adv} heavy by the time it was closed.",
                "{name} checked the tickets twice before leaving.",
            ],
            &[
                "the {transport} departed {time}.",
                "{name} found a seat by the window of the {transport}.",
                "{name} waited at the terminal for the {transport} to board.",
            ],
            &[
                "the journey took {num} hours through hills and small towns.",
                "{name} read a guidebook about {city} on the way.",
                "the {transport} was delayed, so {name} slept for a while.",
            ],
            &[
                "{name} finally arrived in {city} late in the afternoon.",
                "the {lodging} was small but clean and friendly.",
                "{name} checked into the {lodging} and dropped off the {bag}.",
            ],
            &[
                "the next day {name} visited the {sight}.",
                "{name} walked for hours around the {sight} and took photos.",
                "a local guide showed {name} the {sight} and told its history.",
            ],
            &[
                "{name} came home with a {bag} full of souvenirs.",
                "{name} returned home {adv} tired but happy.",
                "back home, {name} showed the photos of {city} to friends.",
            ],
        ],
    },
    // computing
    TopicSpec {
        slots: &[
            (
                "program",
                &[
                    "the web server",
                    "the database",
                    "the compiler",
                    "the mobile app",
                    "the build script",
                    "the backup job",
                ],
            ),
            (
                "bug",
                &[
                    "memory leak",
                    "crash",
                    "race condition",
                    "slow query",
                    "deadlock",
                    "buffer overflow",
                ],
            ),
            ("tool", &["debugger", "profiler", "log files", "test suite"]),
            ("lang", &["Rust", "Python", "Java", "C", "Go"]),
            ("machine", &["laptop", "server", "cluster", "old desktop"]),
        ],
        stages: &[
            &[
                "{program} started to crash every few hours.",
                "users reported that {program} was {adv} slow.",
                "{name} got an alert at night about {program}.",
            ],
            &[
                "{name} opened the {tool} to look for the cause.",
                "the {tool} pointed to a {bug} in the {lang} code.",
                "{name} went through the {tool} line by line on the {machine}.",
            ],
            &[
                "the cause turned out to be a {bug} in an old module.",
                "{name} wrote a small patch in {lang} to fix the {bug}.",
                "{name} rewrote the function that caused the {bug}.",
            ],
            &[
                "{name} ran the tests again and every check passed.",
                "a new test was added so the {bug} would not return.",
                "the patch was reviewed by a colleague before merging.",
            ],
            &[
                "the fix was deployed to the {machine} that evening.",
                "{name} restarted {program} and watched the graphs.",
                "the new version went live without any downtime.",
            ],
            &[
                "{program} has run smoothly since the update.",
                "{name} wrote a short report about the {bug}.",
                "the team agreed to add better monitoring to {program}.",
            ],
        ],
    },
    // gardening
    TopicSpec {
        slots: &[
            (
                "plant",
                &[
                    "tomatoes",
                    "beans",
                    "roses",
                    "lettuce",
                    "sunflowers",
                    "carrots",
                    "herbs",
                ],
            ),
            ("tool", &["spade", "rake", "hoe", "garden fork", "trowel"]),
            (
                "soil",
                &["compost", "manure", "mulch", "topsoil", "leaf mould"],
            ),
            (
                "bed",
                &["raised bed", "vegetable patch", "flower bed", "greenhouse"],
            ),
            (
                "pest",
                &["slugs", "aphids", "snails", "caterpillars", "birds"],
            ),
        ],
        stages: &[
            &[
                "{name} decided to grow {plant} in the {bed} this year.",
                "{name} drew a plan of the {bed} on paper.",
                "in early spring, {name} ordered seeds for {plant}.",
            ],
            &[
                "{name} dug over the {bed} with a {tool}.",
                "the soil was mixed with {soil} to make it rich.",
                "{name} raked the {bed} until the soil was fine.",
            ],
            &[
                "the {plant} seeds were sown in neat rows.",
                "{name} planted the young {plant} one by one.",
                "each seed went into a small hole and was covered with {soil}.",
            ],
            &[
                "{name} watered the {bed} every evening with a can.",
                "after two weeks the first green shoots appeared.",
                "the {plant} grew {adv} fast in the warm weather.",
            ],
            &[
                "{pest} attacked the leaves of the {plant}.",
                "{name} spent a morning pulling weeds from the {bed}.",
                "a layer of {soil} helped to keep the {pest} away.",
            ],
            &[
                "in late summer {name} picked the first {plant}.",
                "the harvest of {plant} was bigger than expected.",
                "{name} gave a basket of {plant} to the neighbours.",
            ],
        ],
    },
    // music
    TopicSpec {
        slots: &[
            (
                "instrument",
                &["piano", "violin", "guitar", "cello", "drums", "trumpet"],
            ),
            (
                "piece",
                &[
                    "sonata",
                    "waltz",
                    "ballad",
                    "concerto",
                    "folk song",
                    "jazz standard",
                ],
            ),
            (
                "group",
                &["the band", "the choir", "the orchestra", "the quartet"],
            ),
            (
                "venue",
                &["concert hall", "church", "small club", "school hall"],
            ),
            ("quality", &["tempo", "rhythm", "melody", "tuning"]),
        ],
        stages: &[
            &[
                "{group} chose a new {piece} for the spring concert.",
                "{name} was asked to play the {instrument} part of the {piece}.",
                "{name} found the sheet music for an old {piece}.",
            ],
            &[
                "{name} practised the {piece} on the {instrument} every day.",
                "the hardest passage of the {piece} took weeks to learn.",
                "{name} played the scales slowly to keep the {quality} steady.",
            ],
            &[
                "{group} met for a long rehearsal in the {venue}.",
                "the conductor stopped {group} to fix the {quality}.",
                "by the last rehearsal the {piece} sounded {adv} good.",
            ],
            &[
                "on the day of the concert, {name} tuned the {instrument}.",
                "the {venue} filled up with people half an hour early.",
                "{name} felt {feel} while waiting backstage.",
            ],
            &[
                "{group} opened the concert with the {piece}.",
                "{name} played the solo on the {instrument} without a mistake.",
                "the audience listened in silence until the last note.",
            ],
            &[
                "the applause went on for several minutes.",
                "after the concert, {name} packed the {instrument} and went home.",
                "a local paper praised the {piece} and the {instrument} solo.",
            ],
        ],
    },
    // medicine
    TopicSpec {
        slots: &[
            (
                "symptom",
                &[
                    "fever",
                    "cough",
                    "headache",
                    "sore throat",
                    "stiff neck",
                    "rash",
                ],
            ),
            (
                "clinic",
                &["clinic", "hospital", "health centre", "surgery"],
            ),
            (
                "doctor",
                &[
                    "the doctor",
                    "the nurse",
                    "a specialist",
                    "the family doctor",
                ],
            ),
            (
                "test",
                &["blood test", "chest scan", "throat swab", "urine test"],
            ),
            (
                "medicine",
                &[
                    "antibiotics",
                    "painkillers",
                    "cough syrup",
                    "nasal spray",
                    "tablets",
                ],
            ),
        ],
        stages: &[
            &[
                "{name} woke up with a {symptom} and felt {adv} weak.",
                "for three days {name} had a {symptom} that would not go away.",
                "the {symptom} got worse during the night.",
            ],
            &[
                "{name} called the {clinic} to book an appointment.",
                "{name} waited for an hour at the {clinic}.",
                "the receptionist at the {clinic} took down the details.",
            ],
            &[
                "{doctor} listened to {name}'s chest and took a temperature.",
                "{doctor} asked how long the {symptom} had lasted.",
                "{doctor} sent {name} for a {test}.",
            ],
            &[
                "the {test} showed a mild infection.",
                "{doctor} explained that the {symptom} was caused by a virus.",
                "the results of the {test} came back the next day.",
            ],
            &[
                "{doctor} prescribed {medicine} for a week.",
                "{name} picked up the {medicine} from the pharmacy.",
                "{name} took the {medicine} twice a day with water.",
            ],
            &[
                "after a week the {symptom} was gone.",
                "{name} felt {adv} better and went back to work.",
                "at the follow up visit, {doctor} said {name} had recovered.",
            ],
        ],
    },
];
