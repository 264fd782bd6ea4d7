//! Generates the bundled samples in `datasets/`: synthetic data in the real
//! formats (never copies of third-party data), deterministic for a seed.

use std::io::Write;
use std::path::Path;

use flate2::Compression;
use flate2::write::GzEncoder;

use crate::error::{Result, StreamSqlError};

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
}

/// Event types with the mix seen in the 2011 trace: SUBMIT, SCHEDULE, EVICT,
/// FAIL, FINISH, KILL, LOST (percent).
const EVENT_MIX: [(u8, u64); 7] = [(0, 30), (1, 29), (2, 3), (3, 6), (4, 24), (5, 7), (6, 1)];

/// Writes `parts` gzip CSV files of Google cluster-trace 2011 `task_events`
/// (13 columns, no header, time in microseconds) with `rows` rows in all,
/// time-ordered like the real trace but with up to 5 s of jitter.
pub fn task_events(dir: &Path, rows: usize, parts: usize, seed: u64) -> Result<()> {
    std::fs::create_dir_all(dir)
        .map_err(|e| StreamSqlError::io(format!("cannot create {}", dir.display()), e))?;
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
        let file = std::fs::File::create(&path)
            .map_err(|e| StreamSqlError::io(format!("cannot create {}", path.display()), e))?;
        let mut out = GzEncoder::new(std::io::BufWriter::new(file), Compression::best());
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
            writeln!(
                out,
                "{event_time},{missing},{job},{},{machine},{event_type},{user},{},{},{cpu},{memory},{disk},{}",
                random.below(2000),
                random.below(4),
                random.below(12),
                random.below(2)
            )
            .map_err(|e| StreamSqlError::io(format!("cannot write {}", path.display()), e))?;
        }
        out.finish()
            .and_then(|mut w| w.flush())
            .map_err(|e| StreamSqlError::io(format!("cannot write {}", path.display()), e))?;
    }
    Ok(())
}
