//! Window shapes and their arithmetic: epoch-aligned, half-open `[start, end)`,
//! all times in UTC milliseconds.

use std::fmt;

/// A window declared in a query's GROUP BY.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowSpec {
    /// Fixed, non-overlapping windows of `size`.
    Tumble { size: i64 },
    /// Windows of `size` starting every `slide` (`size >= slide`).
    Hop { slide: i64, size: i64 },
    /// Per key, events closer than `gap` belong to one window.
    Session { gap: i64 },
}

impl fmt::Display for WindowSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = |ms: i64| humantime::format_duration(std::time::Duration::from_millis(ms as u64));
        match *self {
            WindowSpec::Tumble { size } => write!(f, "TUMBLE(size {})", d(size)),
            WindowSpec::Hop { slide, size } => {
                write!(f, "HOP(slide {}, size {})", d(slide), d(size))
            }
            WindowSpec::Session { gap } => write!(f, "SESSION(gap {})", d(gap)),
        }
    }
}

fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

impl WindowSpec {
    /// Width of the panes windows are sliced into (Flink's window slicing):
    /// every window is a run of whole panes, and each row updates one pane.
    /// Sessions have no panes.
    pub fn pane(&self) -> Option<i64> {
        match *self {
            WindowSpec::Tumble { size } => Some(size),
            WindowSpec::Hop { slide, size } => Some(gcd(slide, size)),
            WindowSpec::Session { .. } => None,
        }
    }

    fn slide_and_size(&self) -> (i64, i64) {
        match *self {
            WindowSpec::Tumble { size } => (size, size),
            WindowSpec::Hop { slide, size } => (slide, size),
            WindowSpec::Session { gap } => (gap, gap),
        }
    }

    pub fn size(&self) -> i64 {
        self.slide_and_size().1
    }

    /// Start of the pane holding time `t` (for sessions: `t`, the session a lone
    /// event opens).
    pub fn pane_start(&self, t: i64) -> i64 {
        match self.pane() {
            Some(pane) => t.div_euclid(pane) * pane,
            None => t,
        }
    }

    /// The pane holding time `t` as `[start, end)`; for sessions, the session
    /// a lone event at `t` opens, `[t, t + gap)`.
    pub fn pane_bounds(&self, t: i64) -> (i64, i64) {
        match *self {
            WindowSpec::Session { gap } => (t, t.saturating_add(gap)),
            _ => {
                let start = self.pane_start(t);
                (start, start + self.pane().unwrap_or(0))
            }
        }
    }

    /// End of the last window holding time `t`: once the watermark reaches it,
    /// every window the row belongs to is closed and the row is late.
    pub fn last_end(&self, t: i64) -> i64 {
        let (slide, size) = self.slide_and_size();
        match self {
            WindowSpec::Session { gap } => t.saturating_add(*gap),
            _ => t.div_euclid(slide) * slide + size,
        }
    }

    /// Which windows a watermark has closed, as a number: two watermarks with
    /// the same epoch have closed the same windows (those ending at or before
    /// them). `None` for sessions, whose ends depend on the data.
    pub fn closing_epoch(&self, watermark: i64) -> Option<i64> {
        let (slide, size) = self.slide_and_size();
        match self {
            WindowSpec::Session { .. } => None,
            _ => Some(watermark.saturating_sub(size).div_euclid(slide)),
        }
    }

    /// Starts of the windows holding the pane that starts at `pane_start`, in
    /// ascending order.
    pub fn windows_of_pane(&self, pane_start: i64) -> impl Iterator<Item = i64> {
        let (slide, size) = self.slide_and_size();
        let last = pane_start.div_euclid(slide) * slide;
        let first = (pane_start - size).div_euclid(slide) * slide + slide;
        (0..)
            .map(move |i| first + i * slide)
            .take_while(move |ws| *ws <= last)
    }

    /// Starts of the panes making up the window that starts at `window_start`.
    pub fn panes_of_window(&self, window_start: i64) -> impl Iterator<Item = i64> {
        let pane = self.pane().unwrap_or(i64::MAX);
        let size = self.size();
        (0..)
            .map(move |i| window_start + i * pane)
            .take_while(move |p| *p < window_start + size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_panes_are_the_gcd_and_windows_cover_each_pane() {
        let hop = WindowSpec::Hop {
            slide: 30_000,
            size: 120_000,
        };
        assert_eq!(hop.pane(), Some(30_000));
        assert_eq!(
            hop.windows_of_pane(60_000).collect::<Vec<_>>(),
            vec![-30_000, 0, 30_000, 60_000]
        );
        assert_eq!(
            hop.panes_of_window(0).collect::<Vec<_>>(),
            vec![0, 30_000, 60_000, 90_000]
        );
        assert_eq!(hop.last_end(61_000), 180_000);
        let odd = WindowSpec::Hop {
            slide: 20,
            size: 50,
        };
        assert_eq!(odd.pane(), Some(10));
        // pane [40, 50) is in windows [0, 50), [20, 70), [40, 90)
        assert_eq!(odd.windows_of_pane(40).collect::<Vec<_>>(), vec![0, 20, 40]);
        // pane [50, 60) is in [20, 70) and [40, 90) but not [0, 50): half-open
        assert_eq!(odd.windows_of_pane(50).collect::<Vec<_>>(), vec![20, 40]);
    }

    #[test]
    fn watermarks_closing_the_same_windows_share_an_epoch() {
        let hop = WindowSpec::Hop {
            slide: 30_000,
            size: 120_000,
        };
        // Windows end at 120 s, 150 s, ...: [120 s, 150 s) closes the same ones.
        assert_eq!(hop.closing_epoch(120_000), hop.closing_epoch(149_999));
        assert_ne!(hop.closing_epoch(119_999), hop.closing_epoch(120_000));
        assert_ne!(hop.closing_epoch(149_999), hop.closing_epoch(150_000));
        assert_eq!(hop.closing_epoch(i64::MIN), hop.closing_epoch(i64::MIN + 1));
        assert_eq!(WindowSpec::Session { gap: 10 }.closing_epoch(5), None);
    }

    #[test]
    fn negative_times_floor_towards_minus_infinity() {
        let t = WindowSpec::Tumble { size: 10 };
        assert_eq!(t.pane_start(-1), -10);
        assert_eq!(t.last_end(-1), 0);
        assert_eq!(t.windows_of_pane(-10).collect::<Vec<_>>(), vec![-10]);
    }
}
