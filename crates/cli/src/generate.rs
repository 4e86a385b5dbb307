//! `segflow generate`: a realistic, seeded CRM export in the input contract v1 shape.
//!
//! The model, per customer: skewed geography (country weights, region and city within it);
//! age, gender and lognormal income; a purchase rate and a churn rate each drawn from a gamma
//! distribution, and a churn time from an exponential one at that rate (the Pareto/NBD story),
//! so order counts are gamma-Poisson (a few heavy buyers, many light ones, some who never buy)
//! and customers lapse at different speeds; lognormal spend scaled by a per-customer level;
//! preferred categories and channels; refunds as negative orders; monthly email campaigns with
//! per-customer engagement; page views and cart adds around orders; survey interests that
//! correlate with the categories the customer buys.
//!
//! Determinism: customers are generated in fixed-size chunks, each from its own ChaCha stream
//! (seed, chunk index), and written in chunk order, so a seed gives the same bytes whatever the
//! number of threads.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use chrono::NaiveDate;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Exp, Gamma, LogNormal, Normal, Poisson};
use rayon::prelude::*;

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Number of customers.
    #[arg(long)]
    pub customers: u64,
    /// Random seed; the same seed gives the same files.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Directory to write customers.csv, orders.csv, events.csv, survey_responses.csv to.
    #[arg(long)]
    pub out: PathBuf,
    /// Last day with activity (UTC); the history covers `--years` before it.
    #[arg(long, default_value = "2026-10-31")]
    pub end_date: NaiveDate,
    /// Years of history.
    #[arg(long, default_value_t = 5)]
    pub years: u32,
    /// Corrupt this fraction of rows (0..1) the ways real exports go wrong, and list every row
    /// ingest must quarantine, with its reason, in corrupted_rows.csv.
    #[arg(long, default_value_t = 0.0)]
    pub dirty: f64,
}

const CHUNK: u64 = 2048;

const CATEGORIES: &[&str] = &[
    "electronics",
    "apparel",
    "home",
    "beauty",
    "sports",
    "books",
    "grocery",
    "toys",
    "outdoor",
    "travel",
];
/// The interest each category's buyers tend to declare (same order as CATEGORIES).
const CATEGORY_INTEREST: &[&str] = &[
    "technology",
    "luxury",
    "family",
    "luxury",
    "fitness",
    "sustainability",
    "value",
    "family",
    "sustainability",
    "travel",
];
/// Typical order value by category, in the customer's currency units.
const CATEGORY_PRICE: &[f64] = &[180.0, 60.0, 75.0, 35.0, 55.0, 20.0, 40.0, 30.0, 70.0, 420.0];
const INTERESTS: &[&str] = &[
    "sustainability",
    "technology",
    "fitness",
    "luxury",
    "family",
    "travel",
    "value",
];
const CHANNELS: &[&str] = &["web", "store", "app"];

struct Country {
    code: &'static str,
    weight: f64,
    currency: &'static str,
    income: f64,
    regions: &'static [(&'static str, &'static [&'static str])],
}

const COUNTRIES: &[Country] = &[
    Country {
        code: "US",
        weight: 34.0,
        currency: "USD",
        income: 62000.0,
        regions: &[
            ("California", &["Los Angeles", "San Francisco", "San Diego"]),
            ("New York", &["New York", "Buffalo"]),
            ("Texas", &["Houston", "Austin", "Dallas"]),
            ("Illinois", &["Chicago"]),
            ("District of Columbia", &["Washington, D.C."]),
        ],
    },
    Country {
        code: "GB",
        weight: 12.0,
        currency: "GBP",
        income: 41000.0,
        regions: &[
            ("England", &["London", "Manchester", "Bristol"]),
            ("Scotland", &["Edinburgh", "Glasgow"]),
            ("Wales", &["Cardiff"]),
        ],
    },
    Country {
        code: "DE",
        weight: 10.0,
        currency: "EUR",
        income: 45000.0,
        regions: &[
            ("Bayern", &["München", "Nürnberg"]),
            ("Berlin", &["Berlin"]),
            ("Nordrhein-Westfalen", &["Köln", "Düsseldorf"]),
        ],
    },
    Country {
        code: "FR",
        weight: 8.0,
        currency: "EUR",
        income: 39000.0,
        regions: &[
            ("Île-de-France", &["Paris"]),
            ("Auvergne-Rhône-Alpes", &["Lyon", "Grenoble"]),
            ("Provence-Alpes-Côte d'Azur", &["Marseille", "Nice"]),
        ],
    },
    Country {
        code: "CA",
        weight: 6.0,
        currency: "CAD",
        income: 52000.0,
        regions: &[
            ("Ontario", &["Toronto", "Ottawa"]),
            ("Quebec", &["Montréal"]),
            ("British Columbia", &["Vancouver"]),
        ],
    },
    Country {
        code: "AU",
        weight: 5.0,
        currency: "AUD",
        income: 55000.0,
        regions: &[
            ("New South Wales", &["Sydney"]),
            ("Victoria", &["Melbourne"]),
        ],
    },
    Country {
        code: "NL",
        weight: 4.0,
        currency: "EUR",
        income: 46000.0,
        regions: &[
            ("Noord-Holland", &["Amsterdam"]),
            ("Zuid-Holland", &["Rotterdam", "Den Haag"]),
        ],
    },
    Country {
        code: "ES",
        weight: 4.0,
        currency: "EUR",
        income: 30000.0,
        regions: &[("Madrid", &["Madrid"]), ("Cataluña", &["Barcelona"])],
    },
    Country {
        code: "IT",
        weight: 4.0,
        currency: "EUR",
        income: 32000.0,
        regions: &[("Lombardia", &["Milano"]), ("Lazio", &["Roma"])],
    },
    Country {
        code: "SE",
        weight: 3.0,
        currency: "SEK",
        income: 44000.0,
        regions: &[
            ("Stockholm", &["Stockholm"]),
            ("Västra Götaland", &["Göteborg"]),
        ],
    },
    Country {
        code: "JP",
        weight: 3.0,
        currency: "JPY",
        income: 40000.0,
        regions: &[("Tokyo", &["Tokyo"]), ("Osaka", &["Osaka"])],
    },
    Country {
        code: "BR",
        weight: 3.0,
        currency: "BRL",
        income: 15000.0,
        regions: &[
            ("São Paulo", &["São Paulo", "Campinas"]),
            ("Rio de Janeiro", &["Rio de Janeiro"]),
        ],
    },
    Country {
        code: "MX",
        weight: 2.0,
        currency: "MXN",
        income: 14000.0,
        regions: &[
            ("Ciudad de México", &["Ciudad de México"]),
            ("Jalisco", &["Guadalajara"]),
        ],
    },
    Country {
        code: "IN",
        weight: 2.0,
        currency: "INR",
        income: 9000.0,
        regions: &[
            ("Maharashtra", &["Mumbai", "Pune"]),
            ("Karnataka", &["Bengaluru"]),
        ],
    },
];

const SECS_PER_DAY: i64 = 86_400;

/// Fixed facts of one generation run.
struct World {
    start_day: i64,
    end_day: i64,
    country_cdf: Vec<f64>,
}

struct Buffers {
    customers: Vec<u8>,
    orders: Vec<u8>,
    events: Vec<u8>,
    surveys: Vec<u8>,
    counts: [u64; 4],
}

pub fn run(args: &Args) -> Result<()> {
    anyhow::ensure!(
        (0.0..1.0).contains(&args.dirty),
        "--dirty is a fraction of rows, at least 0 and below 1"
    );
    let started = std::time::Instant::now();
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid date");
    let end_day = (args.end_date - epoch).num_days();
    let world = World {
        start_day: end_day - 365 * i64::from(args.years.max(1)),
        end_day,
        country_cdf: cdf(&COUNTRIES.iter().map(|c| c.weight).collect::<Vec<_>>()),
    };
    let open = |name: &str| -> Result<std::io::BufWriter<std::fs::File>> {
        let path = args.out.join(name);
        let f =
            std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(std::io::BufWriter::with_capacity(1 << 20, f))
    };
    let mut files = [
        open("customers.csv")?,
        open("orders.csv")?,
        open("events.csv")?,
        open("survey_responses.csv")?,
    ];
    files[0].write_all(b"customer_id,signup_date,birth_date,gender,country,region,city,annual_income,email_opt_in,email,last_name\n")?;
    files[1].write_all(
        b"order_id,customer_id,order_ts,amount,currency,category,channel,campaign_id\n",
    )?;
    files[2].write_all(b"customer_id,event_ts,event_type,campaign_id\n")?;
    files[3].write_all(b"customer_id,answered_at,interest,score\n")?;

    let chunks = args.customers.div_ceil(CHUNK);
    // Chunks are generated in parallel in groups, and written in order; a group bounds memory.
    let group = (rayon::current_num_threads() as u64 * 4).max(1);
    let mut totals = [0u64; 4];
    let mut first = 0;
    while first < chunks {
        let last = (first + group).min(chunks);
        let buffers: Vec<Buffers> = (first..last)
            .into_par_iter()
            .map(|c| {
                let lo = c * CHUNK;
                let hi = ((c + 1) * CHUNK).min(args.customers);
                generate_chunk(&world, args.seed, c, lo..hi)
            })
            .collect();
        for b in buffers {
            files[0].write_all(&b.customers)?;
            files[1].write_all(&b.orders)?;
            files[2].write_all(&b.events)?;
            files[3].write_all(&b.surveys)?;
            for (t, n) in totals.iter_mut().zip(b.counts) {
                *t += n;
            }
        }
        first = last;
    }
    for f in &mut files {
        f.flush()?;
    }
    drop(files);
    if args.dirty > 0.0 {
        let report = crate::dirty::corrupt(&args.out, args.dirty, args.seed)?;
        eprintln!(
            "corrupted {} rows; {} more rows refer to a corrupted customer; all listed in {}",
            report.corrupted,
            report.cascaded,
            args.out.join("corrupted_rows.csv").display()
        );
    }
    eprintln!(
        "wrote {} customers, {} orders, {} events, {} survey responses to {} in {:.1}s",
        totals[0],
        totals[1],
        totals[2],
        totals[3],
        args.out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn cdf(weights: &[f64]) -> Vec<f64> {
    let total: f64 = weights.iter().sum();
    let mut acc = 0.0;
    weights
        .iter()
        .map(|w| {
            acc += w / total;
            acc
        })
        .collect()
}

fn pick(cdf: &[f64], rng: &mut ChaCha8Rng) -> usize {
    let u: f64 = rng.random();
    cdf.iter().position(|&c| u < c).unwrap_or(cdf.len() - 1)
}

fn generate_chunk(
    world: &World,
    seed: u64,
    chunk: u64,
    customers: std::ops::Range<u64>,
) -> Buffers {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(chunk);
    // Social signals (event types added to contract v1 after its first release) draw from a
    // stream of their own, so every row the main stream made is the same as before they
    // existed: they are only added.
    let mut social = ChaCha8Rng::seed_from_u64(splitmix64(seed ^ 0x50C1_A150_C1A1));
    social.set_stream(chunk);
    let n = (customers.end - customers.start) as usize;
    let mut b = Buffers {
        customers: Vec::with_capacity(n * 100),
        orders: Vec::with_capacity(n * 900),
        events: Vec::with_capacity(n * 1200),
        surveys: Vec::with_capacity(n * 40),
        counts: [0; 4],
    };
    let age: Normal<f64> = Normal::new(42.0, 14.0).expect("valid normal");
    let spend_level = LogNormal::new(0.0, 0.6).expect("valid lognormal");
    let rate = Gamma::new(1.5, 4.0).expect("valid gamma");
    // Churn per year: mean 0.25 (a 4-year lifetime), spread so that some lapse within months
    // and many stay for a decade. Customers differ in how fast they lapse, as real ones do (the
    // BG/NBD model's dropout heterogeneity has something to measure).
    let churn: Gamma<f64> = Gamma::new(0.8, 0.25 / 0.8).expect("valid gamma");
    let price_noise = LogNormal::new(0.0, 0.45).expect("valid lognormal");
    let span = world.end_day - world.start_day;
    for i in customers {
        let id = format!("C{:08}", i + 1);
        // Signups lean towards recent years, as a growing business's do.
        let signup_day = world.start_day + ((rng.random::<f64>().powf(0.7)) * span as f64) as i64;
        let country = &COUNTRIES[pick(&world.country_cdf, &mut rng)];
        let (region, cities) = country.regions[rng.random_range(0..country.regions.len())];
        let city = cities[rng.random_range(0..cities.len())];
        let age_years = age.sample(&mut rng).clamp(18.0, 90.0);
        let birth_day = world.end_day - (age_years * 365.25) as i64 - rng.random_range(0..365);
        let gender = match rng.random::<f64>() {
            u if u < 0.49 => "F",
            u if u < 0.97 => "M",
            u if u < 0.99 => "X",
            _ => "",
        };
        let income = LogNormal::new(country.income.ln(), 0.55)
            .expect("valid lognormal")
            .sample(&mut rng);
        let opt_in = rng.random_bool(0.68);

        let c = &mut b.customers;
        c.extend_from_slice(id.as_bytes());
        c.push(b',');
        push_date(c, signup_day);
        c.push(b',');
        if rng.random_bool(0.96) {
            push_date(c, birth_day);
        }
        c.push(b',');
        c.extend_from_slice(gender.as_bytes());
        c.push(b',');
        c.extend_from_slice(country.code.as_bytes());
        c.push(b',');
        push_field(c, region);
        c.push(b',');
        push_field(c, city);
        c.push(b',');
        if rng.random_bool(0.92) {
            write!(c, "{:.2}", income).expect("write to vec");
        }
        c.push(b',');
        c.extend_from_slice(if opt_in { b"true" } else { b"false" });
        // Contact columns (added to contract v1 for the CRM exports) come from the id alone,
        // not the seeded stream: the columns before them are the same as before they existed.
        let contact = splitmix64(i + 1);
        c.push(b',');
        if contact % 100 >= 4 {
            // 4% have no email; example.com is reserved for examples (RFC 2606).
            write!(c, "{}@example.com", id.to_ascii_lowercase()).expect("write to vec");
        }
        c.push(b',');
        if (contact >> 8) % 100 >= 2 {
            c.extend_from_slice(LAST_NAMES[(contact >> 16) as usize % LAST_NAMES.len()].as_bytes());
        }
        c.push(b'\n');
        b.counts[0] += 1;

        // Behaviour. Some customers never buy; the rest buy at a gamma-distributed rate until
        // they churn (or the history ends).
        let buys = rng.random_bool(0.92);
        let level = spend_level.sample(&mut rng);
        let yearly = if buys { rate.sample(&mut rng) } else { 0.0 };
        let lifetime_days = Exp::new(churn.sample(&mut rng).max(1e-6) / 365.0)
            .expect("positive rate")
            .sample(&mut rng);
        let active_end = (signup_day + lifetime_days.min(1e6) as i64).min(world.end_day);
        let active_years = (active_end - signup_day).max(0) as f64 / 365.0;
        let n_orders = if yearly * active_years > 0.0 {
            (Poisson::new(yearly * active_years)
                .expect("positive mean")
                .sample(&mut rng) as u32)
                .min(400)
        } else {
            0
        };
        // Category preference: one favourite, sometimes a second.
        let fav = rng.random_range(0..CATEGORIES.len());
        let second = rng.random_range(0..CATEGORIES.len());
        let channel_cdf = {
            let mut w = [0.5, 0.3, 0.2];
            w[rng.random_range(0..3)] += 1.0;
            cdf(&w)
        };
        let engagement: f64 = rng.random::<f64>().powf(1.3);
        let start_secs = signup_day * SECS_PER_DAY;
        let end_secs = (active_end + 1) * SECS_PER_DAY;
        let mut seq = 0u32;
        let mut order_times = Vec::with_capacity(n_orders as usize);
        for _ in 0..n_orders {
            let ts = rng.random_range(start_secs..end_secs.max(start_secs + 1));
            let cat = match rng.random::<f64>() {
                u if u < 0.55 => fav,
                u if u < 0.75 => second,
                _ => rng.random_range(0..CATEGORIES.len()),
            };
            let amount = (CATEGORY_PRICE[cat] * level * price_noise.sample(&mut rng)).max(1.0);
            let channel = CHANNELS[pick(&channel_cdf, &mut rng)];
            let campaign = rng
                .random_bool(if opt_in { 0.12 } else { 0.03 })
                .then(|| campaign_of(ts));
            seq += 1;
            order_times.push(ts);
            push_order(
                &mut b.orders,
                &id,
                seq,
                ts,
                amount,
                country.currency,
                CATEGORIES[cat],
                channel,
                campaign.as_deref(),
            );
            b.counts[1] += 1;
            // Browsing before the order.
            let views = Poisson::new(0.8).expect("positive mean").sample(&mut rng) as u32;
            for _ in 0..views {
                let t = (ts - rng.random_range(60..3 * SECS_PER_DAY)).max(start_secs);
                push_event(&mut b.events, &id, t, "page_view", None);
                b.counts[2] += 1;
            }
            if rng.random_bool(0.4) {
                push_event(
                    &mut b.events,
                    &id,
                    (ts - rng.random_range(30..3600)).max(start_secs),
                    "cart_add",
                    None,
                );
                b.counts[2] += 1;
            }
            // A refund a few days later for some orders: a new order with a negative amount.
            if rng.random_bool(0.04) {
                let t = (ts + rng.random_range(SECS_PER_DAY..20 * SECS_PER_DAY))
                    .min((world.end_day + 1) * SECS_PER_DAY - 1);
                let part = if rng.random_bool(0.7) {
                    1.0
                } else {
                    rng.random_range(0.2..0.9)
                };
                seq += 1;
                push_order(
                    &mut b.orders,
                    &id,
                    seq,
                    t,
                    -(amount * part).max(0.5),
                    country.currency,
                    CATEGORIES[cat],
                    channel,
                    None,
                );
                b.counts[1] += 1;
            }
        }
        // Monthly campaigns go to a quarter of the opted-in customers each month.
        if opt_in {
            let first_month = month_index(signup_day);
            let last_month = month_index(world.end_day);
            for m in first_month..=last_month {
                if !rng.random_bool(0.1) {
                    continue;
                }
                let day = month_start_day(m) + rng.random_range(0..5);
                if day < signup_day || day > world.end_day {
                    continue;
                }
                let campaign = campaign_name(m);
                let t = day * SECS_PER_DAY + rng.random_range(28_800..36_000);
                push_event(&mut b.events, &id, t, "email_sent", Some(&campaign));
                b.counts[2] += 1;
                if rng.random_bool(0.15 + 0.6 * engagement) {
                    let t_open = (t + rng.random_range(60..2 * SECS_PER_DAY))
                        .min((world.end_day + 1) * SECS_PER_DAY - 1);
                    push_event(&mut b.events, &id, t_open, "email_open", Some(&campaign));
                    b.counts[2] += 1;
                    if rng.random_bool(0.1 + 0.4 * engagement) {
                        push_event(
                            &mut b.events,
                            &id,
                            (t_open + rng.random_range(5..600))
                                .min((world.end_day + 1) * SECS_PER_DAY - 1),
                            "email_click",
                            Some(&campaign),
                        );
                        b.counts[2] += 1;
                    }
                }
            }
        }
        if rng.random_bool(0.02 + 0.01 * f64::from(n_orders.min(10))) {
            let t = rng.random_range(start_secs..(world.end_day + 1) * SECS_PER_DAY);
            push_event(&mut b.events, &id, t, "support_ticket", None);
            b.counts[2] += 1;
        }
        b.counts[2] += social_events(
            &mut social,
            &mut b.events,
            &id,
            engagement,
            signup_day,
            world.end_day,
            &order_times,
        );
        // Surveys: a third answer; the interest of their favourite category tends to score high.
        if rng.random_bool(0.35) {
            let rounds = if rng.random_bool(0.1) { 2 } else { 1 };
            for _ in 0..rounds {
                let day = rng.random_range(signup_day..=world.end_day);
                let answers = rng.random_range(2..=5);
                let mut asked = INTERESTS.to_vec();
                // The favourite's interest is always asked, so it can be scored.
                asked.retain(|i| *i != CATEGORY_INTEREST[fav]);
                asked.insert(0, CATEGORY_INTEREST[fav]);
                for (k, interest) in asked.iter().take(answers).enumerate() {
                    let score = if k == 0 {
                        rng.random_range(3..=5)
                    } else if *interest == CATEGORY_INTEREST[second] {
                        rng.random_range(2..=5)
                    } else {
                        rng.random_range(1..=4)
                    };
                    let s = &mut b.surveys;
                    s.extend_from_slice(id.as_bytes());
                    s.push(b',');
                    push_date(s, day);
                    s.push(b',');
                    s.extend_from_slice(interest.as_bytes());
                    writeln!(s, ",{score}").expect("write to vec");
                    b.counts[3] += 1;
                }
            }
        }
    }
    b
}

/// A customer's social events: the more engaged follow the brand more often (a
/// `social_follow`) and then like, comment on and share its posts for as long as the history
/// runs; some orders get a `review` within two weeks. Returns how many it wrote.
fn social_events(
    rng: &mut ChaCha8Rng,
    events: &mut Vec<u8>,
    id: &str,
    engagement: f64,
    signup_day: i64,
    end_day: i64,
    order_times: &[i64],
) -> u64 {
    let last = (end_day + 1) * SECS_PER_DAY - 1;
    let mut n = 0;
    if rng.random_bool(0.15 + 0.35 * engagement) {
        let follow = rng.random_range(signup_day * SECS_PER_DAY..=last);
        push_event(events, id, follow, "social_follow", None);
        n += 1;
        let years = (last - follow) as f64 / (365.0 * SECS_PER_DAY as f64);
        let mean = (0.5 + 6.0 * engagement) * years;
        let interactions = if mean > 0.0 {
            (Poisson::new(mean).expect("positive mean").sample(rng) as u32).min(300)
        } else {
            0
        };
        for _ in 0..interactions {
            let t = rng.random_range(follow..=last);
            let kind = match rng.random::<f64>() {
                u if u < 0.6 => "social_like",
                u if u < 0.85 => "social_comment",
                _ => "social_share",
            };
            push_event(events, id, t, kind, None);
            n += 1;
        }
    }
    for &ts in order_times {
        if rng.random_bool(0.03 + 0.1 * engagement) {
            let t = (ts + rng.random_range(SECS_PER_DAY..14 * SECS_PER_DAY)).min(last);
            push_event(events, id, t, "review", None);
            n += 1;
        }
    }
    n
}

#[allow(clippy::too_many_arguments)]
fn push_order(
    buf: &mut Vec<u8>,
    customer: &str,
    seq: u32,
    ts: i64,
    amount: f64,
    currency: &str,
    category: &str,
    channel: &str,
    campaign: Option<&str>,
) {
    write!(buf, "O{}-{seq:04},{customer},", &customer[1..]).expect("write to vec");
    push_ts(buf, ts);
    write!(buf, ",{amount:.2},{currency},{category},{channel},").expect("write to vec");
    if let Some(c) = campaign {
        buf.extend_from_slice(c.as_bytes());
    }
    buf.push(b'\n');
}

fn push_event(buf: &mut Vec<u8>, customer: &str, ts: i64, kind: &str, campaign: Option<&str>) {
    buf.extend_from_slice(customer.as_bytes());
    buf.push(b',');
    push_ts(buf, ts);
    buf.push(b',');
    buf.extend_from_slice(kind.as_bytes());
    buf.push(b',');
    if let Some(c) = campaign {
        buf.extend_from_slice(c.as_bytes());
    }
    buf.push(b'\n');
}

/// A CSV field, quoted as RFC 4180 asks when it holds a comma, quote or line break.
/// Surnames for the generated `last_name` (common ones across the generated countries).
const LAST_NAMES: &[&str] = &[
    "Smith",
    "Johnson",
    "Garcia",
    "Müller",
    "Martin",
    "Rossi",
    "Silva",
    "Kim",
    "Nguyen",
    "Andersson",
    "Dubois",
    "Schmidt",
    "Tanaka",
    "Kowalski",
    "O'Brien",
    "Fernández",
    "Jansen",
    "Hansen",
    "Santos",
    "Patel",
    "Brown",
    "Lee",
    "Wilson",
    "Moreau",
];

/// SplitMix64: a well-mixed 64-bit value from a counter.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn push_field(buf: &mut Vec<u8>, s: &str) {
    if s.contains([',', '"', '\n', '\r']) {
        buf.push(b'"');
        buf.extend_from_slice(s.replace('"', "\"\"").as_bytes());
        buf.push(b'"');
    } else {
        buf.extend_from_slice(s.as_bytes());
    }
}

/// Civil date of a day number (days since 1970-01-01), after H. Hinnant's `civil_from_days`.
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn push_date(buf: &mut Vec<u8>, days: i64) {
    let (y, m, d) = civil(days);
    write!(buf, "{y:04}-{m:02}-{d:02}").expect("write to vec");
}

fn push_ts(buf: &mut Vec<u8>, secs: i64) {
    let days = secs.div_euclid(SECS_PER_DAY);
    let s = secs.rem_euclid(SECS_PER_DAY);
    push_date(buf, days);
    write!(buf, "T{:02}:{:02}:{:02}Z", s / 3600, s / 60 % 60, s % 60).expect("write to vec");
}

/// Months since 1970-01.
fn month_index(days: i64) -> i64 {
    let (y, m, _) = civil(days);
    (y - 1970) * 12 + i64::from(m) - 1
}

fn month_start_day(month: i64) -> i64 {
    let y = 1970 + month.div_euclid(12);
    let m = month.rem_euclid(12) as u32 + 1;
    let date = NaiveDate::from_ymd_opt(y as i32, m, 1).expect("valid month");
    (date - NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid date")).num_days()
}

fn campaign_name(month: i64) -> String {
    format!(
        "CMP-{}-{:02}",
        1970 + month.div_euclid(12),
        month.rem_euclid(12) + 1
    )
}

fn campaign_of(ts: i64) -> String {
    campaign_name(month_index(ts.div_euclid(SECS_PER_DAY)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates_match_chrono() {
        let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap();
        for days in [-1, 0, 59, 365, 11_016, 20_392, 20_757, 30_000] {
            let d = epoch + chrono::Duration::days(days);
            let mut buf = Vec::new();
            push_date(&mut buf, days);
            assert_eq!(
                String::from_utf8(buf).unwrap(),
                d.format("%Y-%m-%d").to_string()
            );
        }
        let mut buf = Vec::new();
        push_ts(&mut buf, 20_392 * SECS_PER_DAY + 14 * 3600 + 22 * 60 + 5);
        assert_eq!(String::from_utf8(buf).unwrap(), "2025-10-31T14:22:05Z");
    }

    #[test]
    fn fields_with_commas_are_quoted() {
        let mut buf = Vec::new();
        push_field(&mut buf, "Washington, D.C.");
        push_field(&mut buf, "a\"b");
        assert_eq!(
            String::from_utf8(buf).unwrap(),
            "\"Washington, D.C.\"\"a\"\"b\""
        );
    }

    #[test]
    fn same_seed_same_bytes_different_seed_different_bytes() {
        let world = World {
            start_day: 18_000,
            end_day: 19_825,
            country_cdf: cdf(&[1.0, 2.0]),
        };
        let a = generate_chunk(&world, 7, 3, 0..50);
        let b = generate_chunk(&world, 7, 3, 0..50);
        let c = generate_chunk(&world, 8, 3, 0..50);
        assert_eq!(a.orders, b.orders);
        assert_eq!(a.customers, b.customers);
        assert_ne!(a.orders, c.orders);
    }

    #[test]
    fn months_and_campaigns() {
        let d = (NaiveDate::from_ymd_opt(2026, 3, 15).unwrap()
            - NaiveDate::from_ymd_opt(1970, 1, 1).unwrap())
        .num_days();
        assert_eq!(campaign_of(d * SECS_PER_DAY), "CMP-2026-03");
        assert_eq!(month_start_day(month_index(d)), d - 14);
    }
}
