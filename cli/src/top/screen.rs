//! What `ctl top` shows, as lines of text: the same for the full-screen
//! view (cut to the terminal's size) and the plain `--once` table.

use super::rates::{PortView, SortKey, View};

/// The keys, as the header lists them.
pub const KEYS: &str = "t/f/d/h/n or s: sort, q: quit";

const COLUMNS: [&str; 11] = [
    "NAME", "TYPE", "STATE", "RX/s", "TX/s", "RX bit/s", "TX bit/s", "HELD/s", "HELD", "DROPS/s",
    "PEER",
];

/// A rate for people: three significant digits and an SI prefix.
pub fn si(v: f64) -> String {
    let (scaled, prefix) = [(1e9, "G"), (1e6, "M"), (1e3, "k")]
        .into_iter()
        .find(|(f, _)| v >= *f)
        .map_or((v, ""), |(f, p)| (v / f, p));
    if scaled >= 100.0 || (prefix.is_empty() && scaled.fract() == 0.0) {
        format!("{scaled:.0}{prefix}")
    } else if scaled >= 10.0 {
        format!("{scaled:.1}{prefix}")
    } else {
        format!("{scaled:.2}{prefix}")
    }
}

/// The drop rates of a port, largest first: `12 egress_full, 1 mac_spoof`.
fn drops(p: &PortView) -> String {
    let Some(r) = &p.rates else {
        return "-".into();
    };
    let mut by: Vec<(&String, &f64)> = r.drops_per_second.iter().collect();
    by.sort_by(|a, b| b.1.total_cmp(a.1));
    if by.is_empty() {
        return "0".into();
    }
    by.iter()
        .map(|(reason, v)| format!("{} {reason}", si(**v)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn cells(p: &PortView) -> Vec<String> {
    let rate =
        |f: fn(&super::rates::Rates) -> f64| p.rates.as_ref().map_or("-".into(), |r| si(f(r)));
    vec![
        p.name.clone(),
        p.kind.clone(),
        p.state.clone(),
        rate(|r| r.rx_frames_per_second),
        rate(|r| r.tx_frames_per_second),
        rate(|r| r.rx_bits_per_second),
        rate(|r| r.tx_bits_per_second),
        rate(|r| r.held_per_second),
        p.held_frames.to_string(),
        drops(p),
        p.peer.clone(),
    ]
}

/// The summary line: port count, FDB size and event rates, sort order.
pub fn summary(view: &View, sort: SortKey) -> String {
    let f = &view.fdb;
    format!(
        "switchyard top: {} ports  FDB {}/{}  learn {}/s  move {}/s  age {}/s  sort: {}  ({KEYS})",
        view.ports.len(),
        f.entries,
        f.max_entries,
        si(f.learned_per_second),
        si(f.moved_per_second),
        si(f.aged_per_second),
        sort.as_str(),
    )
}

/// The port table: a header and one row per port in the view's order,
/// columns padded to their widest cell (PEER, last, is not padded). A
/// port without rates yet (new since the previous poll) shows `-`.
pub fn table(view: &View) -> Vec<String> {
    columns(&COLUMNS, view.ports.iter().map(cells).collect())
}

/// A header and rows as lines, each column padded to its widest cell and
/// two spaces apart, trailing spaces cut (`ctl ports` and the others print
/// their tables through this too).
pub fn columns(header: &[&str], rows: Vec<Vec<String>>) -> Vec<String> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let parts: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        parts.join("  ").trim_end().to_string()
    };
    std::iter::once(line(header.iter().map(|c| c.to_string()).collect()))
        .chain(rows.into_iter().map(line))
        .collect()
}

/// The full screen: summary, an optional status (an error reaching the
/// daemon), the table; at most `height` lines, each cut to `width`
/// characters, the last saying how many ports did not fit.
pub fn screen(
    view: &View,
    sort: SortKey,
    status: Option<&str>,
    width: u16,
    height: u16,
) -> Vec<String> {
    let (width, height) = (usize::from(width), usize::from(height));
    let mut lines = vec![summary(view, sort)];
    if let Some(s) = status {
        lines.push(s.to_string());
    }
    lines.push(String::new());
    let table = table(view);
    let room = height.saturating_sub(lines.len());
    if table.len() > room {
        let shown = room.saturating_sub(1);
        let hidden = view.ports.len().saturating_sub(shown.saturating_sub(1));
        lines.extend(table.into_iter().take(shown));
        lines.push(format!("… {hidden} more ports (make the terminal taller)"));
    } else {
        lines.extend(table);
    }
    lines.truncate(height);
    lines
        .into_iter()
        .map(|l| l.chars().take(width).collect())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::rates::tests::{row, sample};
    use super::super::rates::{compute, sort};
    use super::*;

    fn view() -> View {
        let a = sample(0, vec![row(1, "a", 0), row(2, "b", 0)], 0);
        let b = sample(
            1000,
            vec![row(1, "a", 2000), row(2, "b", 10), row(3, "c", 0)],
            3,
        );
        let mut v = compute(&a, &b);
        sort(&mut v.ports, SortKey::Traffic);
        v
    }

    #[test]
    fn numbers_for_people() {
        for (v, want) in [
            (0.0, "0"),
            (7.0, "7"),
            (2.5, "2.50"),
            (999.0, "999"),
            (1234.0, "1.23k"),
            (56_780.0, "56.8k"),
            (1_600_000.0, "1.60M"),
            (3.2e9, "3.20G"),
        ] {
            assert_eq!(si(v), want, "{v}");
        }
    }

    #[test]
    fn the_table_has_a_row_per_port_with_its_rates() {
        let t = table(&view());
        assert!(
            t[0].starts_with("NAME") && t[0].ends_with("PEER"),
            "{}",
            t[0]
        );
        assert!(t[1].starts_with("a ") && t[1].contains("2.00k"), "{}", t[1]);
        assert!(t[1].contains("400 egress_full"), "{}", t[1]);
        assert!(t[1].contains("1.60M"), "{}", t[1]);
        assert!(t[3].starts_with("c  ") && t[3].contains(" -  "), "{}", t[3]);
        let s = summary(&view(), SortKey::Traffic);
        assert!(
            s.contains("3 ports") && s.contains("FDB 2/100") && s.contains("learn 3/s"),
            "{s}"
        );
    }

    #[test]
    fn the_screen_fits_the_terminal() {
        let v = view();
        let full = screen(&v, SortKey::Traffic, None, 200, 50);
        assert_eq!(full.len(), 2 + 4, "{full:#?}");
        let narrow = screen(&v, SortKey::Traffic, Some("cannot reach"), 20, 50);
        assert!(
            narrow.iter().all(|l| l.chars().count() <= 20),
            "{narrow:#?}"
        );
        assert_eq!(narrow[1], "cannot reach");
        let short = screen(&v, SortKey::Traffic, None, 200, 4);
        assert_eq!(short.len(), 4, "{short:#?}");
        assert!(short[3].starts_with("… 3 more ports"), "{short:#?}");
        assert!(screen(&v, SortKey::Traffic, None, 0, 0).is_empty());
    }
}
