//! The Nexmark queries of `queries/nexmark/` (pipeline `nexmark`) on events
//! from RisingWave's generator, in time order and in out-of-order groups
//! inside the 4 s watermark delay (up to 3 s), at several batch sizes per source and
//! parallelisms: every query's rows equal DataFusion batch SQL over the same
//! JSON files, each query's batch form written here (windows as integer
//! arithmetic on the milliseconds, sessions with `lag`), so neither side's
//! window code is used by the other.

use crate::common;

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::prelude::{CsvReadOptions, JsonReadOptions, SessionContext};

const LIMIT: Duration = Duration::from_secs(300);

/// `b`: the bids with their time in milliseconds as `t`.
const BIDS: &str = "b AS (SELECT auction, bidder, price, channel, url,
    to_timestamp_millis(date_time) AS date_time,
    CAST(to_timestamp_millis(date_time) AS BIGINT) AS t FROM bid)";

/// q15-q17's counts of bids in the three price ranks (the total first)...
const BID_RANKS: &str = "count(*),
    count(*) FILTER (WHERE price < 10000),
    count(*) FILTER (WHERE price >= 10000 AND price < 1000000),
    count(*) FILTER (WHERE price >= 1000000),";

/// ... and q15-q16's of distinct bidders and auctions.
const DISTINCT_RANKS: &str = "count(DISTINCT bidder),
    count(DISTINCT bidder) FILTER (WHERE price < 10000),
    count(DISTINCT bidder) FILTER (WHERE price >= 10000 AND price < 1000000),
    count(DISTINCT bidder) FILTER (WHERE price >= 1000000),
    count(DISTINCT auction),
    count(DISTINCT auction) FILTER (WHERE price < 10000),
    count(DISTINCT auction) FILTER (WHERE price >= 10000 AND price < 1000000),
    count(DISTINCT auction) FILTER (WHERE price >= 1000000)";

/// Each query and its batch form (`{BID_RANKS}` and `{DISTINCT_RANKS}`
/// stand for those counts).
const QUERIES: [(&str, &str); 17] = [
    ("q0", "SELECT auction, bidder, price, date_time FROM b"),
    ("q1", "SELECT auction, bidder, 0.908 * price AS price, date_time FROM b"),
    ("q2", "SELECT auction, price FROM b WHERE auction % 123 = 0"),
    (
        "q5",
        // Every 2 s, the windows of the 10 s before: five per bid.
        ", w AS (SELECT auction, (t / 2000) * 2000 - k * 2000 AS ws
               FROM b CROSS JOIN (VALUES (0), (1), (2), (3), (4)) AS ks(k)),
           c AS (SELECT auction, ws, count(*) AS num FROM w GROUP BY auction, ws),
           m AS (SELECT ws, max(num) AS maxn FROM c GROUP BY ws)
         SELECT c.auction, c.num, to_timestamp_millis(c.ws) AS window_start
         FROM c JOIN m ON c.ws = m.ws AND c.num >= m.maxn",
    ),
    (
        "q7",
        ", m AS (SELECT max(price) AS maxprice, w * 10000 + 10000 AS we
               FROM (SELECT price, t / 10000 AS w FROM b) GROUP BY w)
         SELECT b.auction, b.price, b.bidder, b.date_time
         FROM b JOIN m ON b.price = m.maxprice AND b.t BETWEEN m.we - 10000 AND m.we",
    ),
    (
        "q8",
        ", p AS (SELECT DISTINCT id, name,
                  CAST(to_timestamp_millis(date_time) AS BIGINT) / 10000 AS w FROM person),
           s AS (SELECT DISTINCT seller,
                  CAST(to_timestamp_millis(date_time) AS BIGINT) / 10000 AS w FROM auction)
         SELECT p.id, p.name, to_timestamp_millis(p.w * 10000) AS window_start
         FROM p JOIN s ON p.id = s.seller AND p.w = s.w",
    ),
    (
        "q11",
        // A session goes on while the next bid is less than 10 s away.
        ", g AS (SELECT bidder, t, CASE WHEN t - lag(t) OVER (PARTITION BY bidder ORDER BY t)
                                     < 10000 THEN 0 ELSE 1 END AS starts FROM b),
           s AS (SELECT bidder, t, sum(starts) OVER (PARTITION BY bidder ORDER BY t
                                     ROWS UNBOUNDED PRECEDING) AS session FROM g)
         SELECT bidder, count(*) AS bid_count, to_timestamp_millis(min(t)) AS window_start,
                to_timestamp_millis(max(t) + 10000) AS window_end
         FROM s GROUP BY bidder, session",
    ),
    (
        "q13",
        "SELECT b.auction, b.bidder, b.price, b.date_time, s.value
         FROM b JOIN side_input s ON s.key = b.auction % 10000",
    ),
    (
        "q14",
        "SELECT auction, bidder, 0.908 * price AS price,
                CASE WHEN date_part('hour', date_time) BETWEEN 8 AND 18 THEN 'dayTime'
                     WHEN date_part('hour', date_time) <= 6 OR date_part('hour', date_time) >= 20
                          THEN 'nightTime'
                     ELSE 'otherTime' END AS bid_time_type,
                date_time, length(url) - length(replace(url, 'c', '')) AS c_counts
         FROM b WHERE 0.908 * price > 1000000 AND 0.908 * price < 50000000",
    ),
    (
        "q15",
        "SELECT to_timestamp_millis(t / 86400000 * 86400000) AS day, {BID_RANKS} {DISTINCT_RANKS}
         FROM b GROUP BY t / 86400000",
    ),
    (
        "q16",
        "SELECT channel, to_timestamp_millis(t / 86400000 * 86400000) AS day, {BID_RANKS} {DISTINCT_RANKS}
         FROM b GROUP BY channel, t / 86400000",
    ),
    (
        "q17",
        "SELECT auction, to_timestamp_millis(t / 86400000 * 86400000) AS day, {BID_RANKS}
                min(price), max(price), avg(price), sum(price)
         FROM b GROUP BY auction, t / 86400000",
    ),
    (
        "q21",
        "SELECT auction, bidder, price, channel,
                CASE WHEN lower(channel) = 'apple' THEN '0'
                     WHEN lower(channel) = 'google' THEN '1'
                     WHEN lower(channel) = 'facebook' THEN '2'
                     WHEN lower(channel) = 'baidu' THEN '3'
                     ELSE regexp_match(url, '(&|^)channel_id=([^&]*)')[2] END
         FROM b WHERE regexp_match(url, '(&|^)channel_id=([^&]*)')[2] IS NOT NULL
                   OR lower(channel) IN ('apple', 'google', 'facebook', 'baidu')",
    ),
    (
        "q22",
        "SELECT auction, bidder, price, channel, split_part(url, '/', 4),
                split_part(url, '/', 5), split_part(url, '/', 6) FROM b",
    ),
    // The intermediate window results, checked on their own as well.
    (
        "q5_max_bids",
        ", w AS (SELECT auction, (t / 2000) * 2000 - k * 2000 AS ws
               FROM b CROSS JOIN (VALUES (0), (1), (2), (3), (4)) AS ks(k)),
           c AS (SELECT auction, ws, count(*) AS num FROM w GROUP BY auction, ws)
         SELECT to_timestamp_millis(ws), to_timestamp_millis(ws + 10000), max(num)
         FROM c GROUP BY ws",
    ),
    (
        "q7_max_price",
        "SELECT max(price), to_timestamp_millis(w * 10000), to_timestamp_millis(w * 10000 + 10000)
         FROM (SELECT price, t / 10000 AS w FROM b) GROUP BY w",
    ),
    (
        "q8_sellers",
        "SELECT DISTINCT seller, to_timestamp_millis(w * 10000), to_timestamp_millis(w * 10000 + 10000)
         FROM (SELECT seller, CAST(to_timestamp_millis(date_time) AS BIGINT) / 10000 AS w
               FROM auction)",
    ),
];

/// The events of `dir`'s gzip files, unpacked into `plain` for DataFusion.
async fn reference_context(dir: &Path, plain: &Path) -> SessionContext {
    std::fs::create_dir_all(plain).unwrap();
    let ctx = SessionContext::new();
    for table in ["person", "auction", "bid"] {
        let mut text = String::new();
        flate2::read::GzDecoder::new(
            std::fs::File::open(dir.join(format!("{table}.jsonl.gz"))).unwrap(),
        )
        .read_to_string(&mut text)
        .unwrap();
        let path = plain.join(format!("{table}.json"));
        std::fs::write(&path, text).unwrap();
        ctx.register_json(table, path.to_str().unwrap(), JsonReadOptions::default())
            .await
            .unwrap();
    }
    let side_input = Schema::new(vec![
        Field::new("key", DataType::Int64, false),
        Field::new("value", DataType::Utf8, false),
    ]);
    let options = CsvReadOptions::new().has_header(false).schema(&side_input);
    let path = dir.join("side_input.csv");
    ctx.register_csv("side_input", path.to_str().unwrap(), options)
        .await
        .unwrap();
    ctx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nexmark_queries_equal_datafusion_batch_sql_in_and_out_of_order() {
    let dir = common::scratch_dir("nexmark");
    for (disorder, runs) in [
        (1, vec![([1000, 1000, 1000], 1), ([1, 7, 64], 3)]),
        (3000, vec![([10, 250, 4000], 2), ([333, 1000, 17], 4)]),
    ] {
        let events = dir.join(format!("events-{disorder}"));
        common::assert_ok(&common::output_within(
            common::streamsql(&[
                "generate-sample",
                "--kind",
                "nexmark",
                "--rows",
                "40000",
                "--disorder",
                &disorder.to_string(),
                "--out",
                events.to_str().unwrap(),
            ]),
            LIMIT,
        ));
        let ctx = reference_context(&events, &dir.join(format!("plain-{disorder}"))).await;
        let mut want = Vec::new();
        for (name, batch_sql) in QUERIES {
            let batch_sql = batch_sql
                .replace("{BID_RANKS}", BID_RANKS)
                .replace("{DISTINCT_RANKS}", DISTINCT_RANKS);
            let sql = match batch_sql.starts_with(',') {
                true => format!("WITH {BIDS}{batch_sql}"),
                false => format!("WITH {BIDS} {batch_sql}"),
            };
            let rows = common::sorted_sql_rows(&ctx, &sql).await;
            assert!(!rows.is_empty(), "{name} has no rows in the reference");
            want.push((name, rows));
        }
        for (batch_rows, parallelism) in runs {
            let config = dir.join("pipelines.yaml");
            let yaml = common::repo_pipelines_variant(
                "nexmark",
                "q22.sql, sinks: [ parquet: {} ] }",
                "",
                &batch_rows,
            );
            std::fs::write(&config, yaml).unwrap();
            let out = dir.join(format!("out-{disorder}-{parallelism}"));
            let workers = parallelism.to_string();
            let extra = ["--from-scratch", "--parallelism", &workers];
            let mut command = common::run_pipeline(&config, "nexmark", &out, &extra);
            command.env("NEXMARK_DIR", &events);
            let stdout = common::assert_ok(&common::output_within(command, LIMIT));
            assert!(stdout.contains(", 0 late"), "{stdout}");
            for (name, rows) in &want {
                let mut got = common::row_texts(&[&out.join(name)]);
                got.sort();
                common::assert_same_rows(
                    &format!(
                        "{name} (disorder {disorder}, batches {batch_rows:?}, {parallelism} workers)"
                    ),
                    rows,
                    &got,
                );
            }
        }
    }
}
