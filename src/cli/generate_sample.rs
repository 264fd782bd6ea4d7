//! `streamsql generate-sample`: writes the bundled samples in `datasets/`:
//! synthetic data in the real formats (never copies of third-party data),
//! deterministic for a seed.

use std::io::Write;
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::write::GzEncoder;

use crate::error::{Result, StreamSqlError};

#[derive(clap::Args)]
pub struct Args {
    /// Which sample.
    #[arg(long, value_enum, default_value = "task-events")]
    kind: SampleKind,
    /// Where to write it (default: the kind's folder under datasets/).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Rows (servers x 5-second steps for server-metrics: minutes).
    #[arg(long)]
    rows: Option<usize>,
    /// Files, for task-events.
    #[arg(long, default_value_t = 2)]
    parts: usize,
    #[arg(long, default_value_t = 2011)]
    seed: u64,
    /// Events per out-of-order group, for nexmark (1: in time order).
    #[arg(long, default_value_t = 1)]
    disorder: usize,
}

pub fn execute(args: Args) -> Result<()> {
    let (default_out, default_rows) = args.kind.defaults();
    let out = args.out.unwrap_or_else(|| PathBuf::from(default_out));
    let (rows, seed) = (args.rows.unwrap_or(default_rows), args.seed);
    match args.kind {
        SampleKind::TaskEvents => task_events(&out, rows, args.parts, seed)?,
        SampleKind::WebLogs => web_logs(&out, rows, seed)?,
        SampleKind::AccessLog => access_log(&out, rows, seed)?,
        SampleKind::ServerMetrics => {
            server_metrics(&out, 12, rows, seed)?;
            split_by_metric(&out, &out.with_file_name("topics"))?;
        }
        SampleKind::MachineUsage => {
            machine_usage(&out, 8, rows, seed)?;
            machine_meta(&out.with_file_name("machine_meta.csv"), 8, seed)?;
        }
        SampleKind::CityEvents => city_events(&out, rows, seed)?,
        SampleKind::Nexmark => nexmark(&out, rows, args.disorder)?,
    }
    println!(
        "wrote the {:?} sample ({rows} rows) to {}",
        args.kind,
        out.display()
    );
    Ok(())
}

/// The bundled samples `generate-sample` writes.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum SampleKind {
    /// W1/W2: Google cluster trace 2011 task_events (CSV parts, gzip).
    TaskEvents,
    /// W3: JSON web-log events.
    WebLogs,
    /// W3: an Apache combined access log.
    AccessLog,
    /// W4: server metrics in the coursework CSV layout (rows = minutes), and
    /// the same split by metric into seed 003's four topics (`topics/`).
    ServerMetrics,
    /// W4: Alibaba 2018 machine_usage layout (rows = minutes per machine),
    /// and machine_meta beside it (the machines' attributes, a lookup table).
    MachineUsage,
    /// W5: JSON city events.
    CityEvents,
    /// Nexmark: person, auction and bid events (JSON lines, gzip), and
    /// q13's side input (CSV).
    Nexmark,
}

impl SampleKind {
    /// Where the repository keeps it, and its size there.
    fn defaults(self) -> (&'static str, usize) {
        match self {
            SampleKind::TaskEvents => ("datasets/google-2011-sample/task_events", 120_000),
            SampleKind::WebLogs => ("datasets/web-logs-sample/events.jsonl.gz", 40_000),
            SampleKind::AccessLog => ("datasets/web-logs-sample/access.log.gz", 6_000),
            SampleKind::ServerMetrics => ("datasets/server-metrics-sample/metrics.csv", 60),
            SampleKind::MachineUsage => ("datasets/server-metrics-sample/machine_usage.csv", 180),
            SampleKind::CityEvents => ("datasets/city-events-sample/events.jsonl.gz", 20_000),
            SampleKind::Nexmark => ("datasets/nexmark-sample", 50_000),
        }
    }
}

/// splitmix64: small, fast and good enough for sample data.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A sample file being written (gzip when its name ends in `.gz`).
struct SampleFile {
    path: std::path::PathBuf,
    out: Box<dyn Write>,
}

impl SampleFile {
    fn create(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| StreamSqlError::io(format!("cannot create {}", dir.display()), e))?;
        }
        let file = std::fs::File::create(path)
            .map_err(|e| StreamSqlError::io(format!("cannot create {}", path.display()), e))?;
        let buffered = std::io::BufWriter::new(file);
        let out: Box<dyn Write> = if path.extension().is_some_and(|e| e == "gz") {
            Box::new(GzEncoder::new(buffered, Compression::best()))
        } else {
            Box::new(buffered)
        };
        Ok(Self {
            path: path.to_path_buf(),
            out,
        })
    }

    fn line(&mut self, text: &str) -> Result<()> {
        writeln!(self.out, "{text}")
            .map_err(|e| StreamSqlError::io(format!("cannot write {}", self.path.display()), e))
    }

    fn finish(mut self) -> Result<()> {
        self.out
            .flush()
            .map_err(|e| StreamSqlError::io(format!("cannot write {}", self.path.display()), e))
    }
}

/// UTC milliseconds as ISO 8601 with milliseconds.
fn iso(millis: i64) -> String {
    chrono::DateTime::from_timestamp_millis(millis)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_default()
}

/// 2025-10-13T10:00:00Z, where the W3 and W5 samples start.
const SAMPLE_START_MS: i64 = 1_760_349_600_000;

/// W3 (seed 002): JSON web-log events, two hours of six services. Planted
/// for the rules: a DDoS burst (one IP, 400 requests in a minute, 2 users),
/// an error-rate spike of `payments`, a slow `search` minute; events up to
/// 20 s out of order, a few hours-old late events, two malformed lines.
pub fn web_logs(path: &Path, rows: usize, seed: u64) -> Result<()> {
    let mut random = Random(seed);
    let services = ["auth", "catalog", "search", "cart", "payments", "profile"];
    let levels = ["INFO", "INFO", "INFO", "WARN", "DEBUG"];
    let ips: Vec<String> = (0..300)
        .map(|_| {
            format!(
                "10.{}.{}.{}",
                random.below(256),
                random.below(256),
                1 + random.below(254)
            )
        })
        .collect();
    let mut out = SampleFile::create(path)?;
    let span_ms = 2 * 3_600_000;
    for i in 0..rows {
        let mut time = SAMPLE_START_MS + (i as i64 * span_ms) / rows as i64;
        time -= random.below(20_000) as i64;
        let minute = (time - SAMPLE_START_MS) / 60_000;
        let mut service = *random.pick(&services);
        let mut ip = random.pick(&ips).clone();
        let mut user = format!("u{:04}", random.below(800));
        // Minute 50: one address floods the site with two user ids.
        if minute == 50 && random.below(2) == 0 {
            ip = "203.0.113.66".into();
            user = format!("u{:04}", 7 + random.below(2));
        }
        let error_share = if service == "payments" && (80..83).contains(&minute) {
            45
        } else {
            3
        };
        let status = if random.below(100) < error_share {
            *random.pick(&[500, 502, 503, 404, 401])
        } else {
            *random.pick(&[200, 200, 200, 201, 204, 304])
        };
        let mut response_time = 0.05 + random.unit() * 0.25;
        if service == "search" && minute == 95 {
            response_time += 2.0;
        }
        if i % 5000 == 4999 {
            time -= 3 * 3_600_000; // late: hours behind the stream
            service = "auth";
        }
        let level = if status >= 500 {
            "ERROR"
        } else {
            *random.pick(&levels)
        };
        out.line(&format!(
            r#"{{"timestamp":"{}","level":"{level}","service":"{service}","message":"{} {}","ip_address":"{ip}","user_id":"{user}","request_id":"r{i:07}","response_time":{response_time:.4},"status_code":{status}}}"#,
            iso(time),
            random.pick(&["GET", "POST"]),
            random.pick(&["/", "/api/items", "/api/login", "/api/pay", "/api/search"]),
        ))?;
        if i == rows / 3 {
            out.line(r#"{"timestamp":"2025-10-13T10:40:00Z","service":"cart","status_code":"#)?;
        }
        if i == 2 * rows / 3 {
            out.line(r#"{"level":"INFO","service":"cart","status_code":200,"response_time":0.1}"#)?;
        }
    }
    out.finish()
}

/// W3 on a real server's log format: Apache "combined" lines, seconds
/// shuffled within each minute (as in real logs), `-` for empty bodies, one
/// line cut short.
pub fn access_log(path: &Path, rows: usize, seed: u64) -> Result<()> {
    let mut random = Random(seed);
    let ips: Vec<String> = (0..200)
        .map(|_| format!("192.0.{}.{}", random.below(3), 1 + random.below(254)))
        .collect();
    let pages = [
        "/",
        "/index.html",
        "/blog/",
        "/images/logo.png",
        "/feed.xml",
        "/missing",
    ];
    let agents = [
        "Mozilla/5.0 (X11; Linux x86_64)",
        "curl/8.5.0",
        "Googlebot/2.1",
    ];
    let mut out = SampleFile::create(path)?;
    // 2015-05-17T10:05:00Z, like the log the format comes from.
    let start = 1_431_857_100_000i64;
    for i in 0..rows {
        let minute = (i as i64 * 240) / rows as i64;
        let time = start + minute * 60_000 + random.below(60) as i64 * 1000;
        let stamp = chrono::DateTime::from_timestamp_millis(time)
            .map(|t| t.format("%d/%b/%Y:%H:%M:%S +0000").to_string())
            .unwrap_or_default();
        let ip = random.pick(&ips);
        let page = *random.pick(&pages);
        let status = match page {
            "/missing" => 404,
            _ if minute == 150 && random.below(3) == 0 => 500,
            _ => *random.pick(&[200, 200, 200, 304]),
        };
        let bytes = if status == 304 {
            "-".to_string()
        } else {
            (200 + random.below(90_000)).to_string()
        };
        let agent = random.pick(&agents);
        let line =
            format!(r#"{ip} - - [{stamp}] "GET {page} HTTP/1.1" {status} {bytes} "-" "{agent}""#);
        if i == rows / 3 {
            // One client fetching the feed 150 times in a minute.
            for _ in 0..150 {
                out.line(&format!(r#"198.51.100.7 - - [{stamp}] "GET /feed.xml HTTP/1.1" 200 5120 "-" "feedbot/1.0""#))?;
            }
        }
        if i == rows / 2 {
            // Cut short, like line 8899 of the real log.
            out.line(&line[..line.len() - 12])?;
        } else {
            out.line(&line)?;
        }
    }
    out.finish()
}

/// W4 (seed 003), in the coursework dataset's layout: `ts,server_id,cpu_pct,
/// mem_pct,net_in,net_out,disk_io` with a time of day, every server every
/// 5 s; CPU, memory, network and disk spikes planted on some servers.
pub fn server_metrics(path: &Path, servers: usize, minutes: usize, seed: u64) -> Result<()> {
    let mut random = Random(seed);
    let mut out = SampleFile::create(path)?;
    out.line("ts,server_id,cpu_pct,mem_pct,net_in,net_out,disk_io")?;
    let start = 20 * 3600 + 53 * 60;
    for step in 0..minutes * 12 {
        let seconds = start + step * 5;
        let ts = format!(
            "{:02}:{:02}:{:02}",
            seconds / 3600 % 24,
            seconds / 60 % 60,
            seconds % 60
        );
        let minute = step / 12;
        for s in 1..=servers {
            // Every `every` minutes (shifted per server) a reading is drawn
            // from the spike range (base, width), else from the normal one.
            let mut draw = |every: usize, spike: (f64, f64), normal: (f64, f64)| {
                let (base, width) = if (minute + s) % every == 0 {
                    spike
                } else {
                    normal
                };
                base + random.unit() * width
            };
            let cpu = draw(17, (85.0, 14.0), (20.0, 50.0));
            let mem = draw(23, (90.0, 9.0), (30.0, 45.0));
            let net_in = draw(29, (6500.0, 3000.0), (500.0, 3500.0));
            let disk = draw(31, (1900.0, 900.0), (20.0, 900.0));
            out.line(&format!(
                "{ts},server_{s},{cpu:.2},{mem:.2},{net_in:.2},{:.2},{disk:.2}",
                net_in * (0.8 + random.unit() * 0.4)
            ))?;
        }
    }
    out.finish()
}

/// Seed 003's four topics: the rows of a coursework-layout file split by
/// metric into `cpu.csv`, `mem.csv`, `net.csv` and `disk.csv` in `dir` (`ts,
/// server_id` and the metric's columns), as its producer sends them.
pub fn split_by_metric(metrics: &Path, dir: &Path) -> Result<()> {
    let text = std::fs::read_to_string(metrics)
        .map_err(|e| StreamSqlError::io(format!("cannot read {}", metrics.display()), e))?;
    // Each topic's columns of `ts,server_id,cpu_pct,mem_pct,net_in,net_out,disk_io`.
    let topics: [(&str, &[usize]); 4] = [
        ("cpu", &[2]),
        ("mem", &[3]),
        ("net", &[4, 5]),
        ("disk", &[6]),
    ];
    for (topic, columns) in topics {
        let mut out = SampleFile::create(&dir.join(format!("{topic}.csv")))?;
        for line in text.lines() {
            let fields: Vec<&str> = line.split(',').collect();
            let mut kept = vec![fields[0], fields[1]];
            kept.extend(columns.iter().filter_map(|c| fields.get(*c)));
            out.line(&kept.join(","))?;
        }
        out.finish()?;
    }
    Ok(())
}

/// W4 on measured data's layout: Alibaba cluster-trace-v2018
/// `machine_usage` (machine_id, time_stamp in s, cpu, mem, mem_gps, mkpi,
/// net_in, net_out, disk_io percent; no header), grouped by machine like
/// the real sample, with the trace's -1/101 markers for invalid disk readings.
pub fn machine_usage(path: &Path, machines: usize, minutes: usize, seed: u64) -> Result<()> {
    let mut random = Random(seed);
    let mut out = SampleFile::create(path)?;
    for m in 0..machines {
        let mut time = 386_640 + random.below(20);
        let mut cpu = 30.0 + random.unit() * 30.0;
        while time < 386_640 + minutes as u64 * 60 {
            // Measured load drifts (unlike the coursework's random draws).
            cpu = (cpu + (random.unit() - 0.5) * 12.0).clamp(1.0, 99.0);
            let mem = 85.0 + random.unit() * 10.0;
            let disk = match random.below(500) {
                0 => -1,
                1 => 101,
                _ => 2 + random.below(60) as i64,
            };
            out.line(&format!(
                "m_{},{time},{:.0},{:.0},,,{:.2},{:.2},{disk}",
                1932 + m,
                cpu,
                mem,
                20.0 + random.unit() * 70.0,
                20.0 + random.unit() * 60.0
            ))?;
            time += 10 + random.below(20);
        }
    }
    out.finish()
}

/// The lookup table for [`machine_usage`]: Alibaba 2018 `machine_meta`
/// (machine_id, time_stamp, failure_domain_1, failure_domain_2, cpu_num,
/// mem_size, status; no header), a row per machine and attribute change,
/// in time order. Of the `machines` with usage, all but the last are listed
/// (an inner join drops its rows), the third ends in maintenance, and
/// machines without usage fill the rest as in the real file.
pub fn machine_meta(path: &Path, machines: usize, seed: u64) -> Result<()> {
    let mut random = Random(seed ^ 0x6d65_7461);
    let mut rows = Vec::new();
    for m in 0..machines + 24 {
        if m == machines - 1 {
            continue;
        }
        let id = 1932 + m;
        let (domain, rack) = (1 + m % 3, 1 + random.below(20));
        let changes = 1 + random.below(3);
        for c in 0..changes {
            let last = c + 1 == changes;
            let status = match (m, last) {
                (2, true) => "IMPORT_INSTALLING",
                _ => "USING",
            };
            let time = if c == 0 {
                0
            } else {
                50_000 * c + random.below(9_000)
            };
            rows.push((
                time,
                format!("m_{id},{time},{domain},{rack},96,100,{status}"),
            ));
        }
    }
    rows.sort_by_key(|(time, _)| *time);
    let mut out = SampleFile::create(path)?;
    for (_, line) in rows {
        out.line(&line)?;
    }
    out.finish()
}

/// W5 (seed 004): JSON city events over three hours; a few arrive after
/// the 10-minute watermark, one line is malformed.
pub fn city_events(path: &Path, rows: usize, seed: u64) -> Result<()> {
    let mut random = Random(seed);
    let cities = [
        "NYC", "LA", "Chicago", "Houston", "Phoenix", "Seattle", "Boston", "Denver",
    ];
    let types = ["traffic", "weather", "incident", "construction"];
    let severities = ["low", "low", "medium", "medium", "high", "critical"];
    let mut out = SampleFile::create(path)?;
    let span_ms = 3 * 3_600_000;
    for i in 0..rows {
        let mut time =
            SAMPLE_START_MS + (i as i64 * span_ms) / rows as i64 - random.below(120_000) as i64;
        if i % 4000 == 3999 {
            time -= 90 * 60_000; // an hour and a half behind: late
        }
        let city = *random.pick(&cities);
        let kind = *random.pick(&types);
        let severity = *random.pick(&severities);
        out.line(&format!(
            r#"{{"city":"{city}","event_type":"{kind}","severity":"{severity}","description":"{kind} report {i}","timestamp":"{}"}}"#,
            iso(time)
        ))?;
        if i == rows / 2 {
            out.line(
                r#"{"city":"LA","event_type":"traffic","severity":"high","description":"no time"}"#,
            )?;
        }
    }
    out.finish()
}

/// Nexmark's events from RisingWave's `nexmark` generator (the one Flink's
/// and Arroyo's suites use, as a library): `person.jsonl.gz`,
/// `auction.jsonl.gz` and `bid.jsonl.gz` in `dir`, `rows` events at 1,000 per
/// second of event time from [`SAMPLE_START_MS`], in groups of `disorder`
/// events in pseudo-random order. Times are ISO 8601; the generator's
/// `extra` padding is left out (no query reads it).
pub fn nexmark(dir: &Path, rows: usize, disorder: usize) -> Result<()> {
    use nexmark::event::Event;
    use serde_json::json;
    let config = nexmark::config::NexmarkConfig {
        base_time: SAMPLE_START_MS as u64,
        first_rate: 1_000,
        next_rate: 1_000,
        out_of_order_group_size: disorder.max(1),
        ..Default::default()
    };
    let file = |name: &str| SampleFile::create(&dir.join(format!("{name}.jsonl.gz")));
    let (mut person, mut auction, mut bid) = (file("person")?, file("auction")?, file("bid")?);
    let time = |ms: u64| iso(ms as i64);
    for event in nexmark::EventGenerator::new(config).take(rows) {
        let (out, row) = match event {
            Event::Person(p) => (
                &mut person,
                json!({"id": p.id, "name": p.name, "email_address": p.email_address,
                    "credit_card": p.credit_card, "city": p.city, "state": p.state,
                    "date_time": time(p.date_time)}),
            ),
            Event::Auction(a) => (
                &mut auction,
                json!({"id": a.id, "item_name": a.item_name, "description": a.description,
                    "initial_bid": a.initial_bid, "reserve": a.reserve,
                    "date_time": time(a.date_time), "expires": time(a.expires),
                    "seller": a.seller, "category": a.category}),
            ),
            Event::Bid(b) => (
                &mut bid,
                json!({"auction": b.auction, "bidder": b.bidder, "price": b.price,
                    "channel": b.channel, "url": b.url, "date_time": time(b.date_time)}),
            ),
        };
        out.line(&row.to_string())?;
    }
    person.finish()?;
    auction.finish()?;
    bid.finish()?;
    // q13's side input: a value for each of 10,000 keys (a lookup table).
    let mut side = SampleFile::create(&dir.join("side_input.csv"))?;
    for key in 0..10_000u64 {
        side.line(&format!("{key},side-{:05}", (key * 7_919) % 10_007))?;
    }
    side.finish()
}

/// Event types with the mix seen in the 2011 trace: SUBMIT, SCHEDULE, EVICT,
/// FAIL, FINISH, KILL, LOST (percent).
const EVENT_MIX: [(u8, u64); 7] = [(0, 30), (1, 29), (2, 3), (3, 6), (4, 24), (5, 7), (6, 1)];

/// Writes `parts` gzip CSV files of Google cluster-trace 2011 `task_events`
/// (13 columns, no header, time in microseconds) with `rows` rows in all,
/// time-ordered like the real trace but with up to 5 s of jitter.
pub fn task_events(dir: &Path, rows: usize, parts: usize, seed: u64) -> Result<()> {
    let mut random = Random(seed);
    let machines: Vec<u64> = (0..150)
        .map(|_| 1_000_000 + random.below(6_000_000_000))
        .collect();
    let jobs: Vec<u64> = (0..400)
        .map(|_| 6_000_000_000 + random.below(300_000_000))
        .collect();
    let users: Vec<String> = (0..40)
        .map(|i| format!("user{i:02}{:08x}=", random.next() as u32))
        .collect();
    let mut time: u64 = 600_000_000;
    let per_part = rows.div_ceil(parts);
    for part in 0..parts {
        let path = dir.join(format!("part-{part:05}-of-{parts:05}.csv.gz"));
        let mut out = SampleFile::create(&path)?;
        for _ in 0..per_part.min(rows - part * per_part) {
            time += random.below(60_000);
            let jitter = random.below(5_000_000);
            let event_time = time.saturating_sub(jitter);
            let mut pick = random.below(100);
            let event_type = EVENT_MIX
                .iter()
                .find(|(_, share)| {
                    let hit = pick < *share;
                    pick = pick.saturating_sub(*share);
                    hit
                })
                .map_or(0, |(t, _)| *t);
            let job = jobs[random.below(jobs.len() as u64) as usize];
            // SUBMIT events have no machine yet, as in the real trace.
            let machine = if event_type == 0 {
                String::new()
            } else {
                machines[random.below(machines.len() as u64) as usize].to_string()
            };
            let missing = if random.below(100) == 0 { "1" } else { "" };
            let user = &users[(job % users.len() as u64) as usize];
            // Requests come in a few sizes, as in the trace (normalised units).
            let cpu = [0.0625, 0.125, 0.01562, 0.03125, 0.25][random.below(5) as usize];
            let memory = [0.0159, 0.03979, 0.07446, 0.1241][random.below(4) as usize];
            let disk = [0.0003862, 0.0000381, 0.0001154][random.below(3) as usize];
            out.line(&format!(
                "{event_time},{missing},{job},{},{machine},{event_type},{user},{},{},{cpu},{memory},{disk},{}",
                random.below(2000),
                random.below(4),
                random.below(12),
                random.below(2)
            ))?;
        }
        out.finish()?;
    }
    Ok(())
}
