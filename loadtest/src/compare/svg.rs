//! Grouped bar charts as plain SVG (no plotting crate): one bar per contender and group at the
//! median, a whisker from the minimum to the maximum of the rounds, the median written above.

use std::fmt::Write;

use super::report::Stat;

const W: f64 = 760.0;
const H: f64 = 380.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 60.0;
const BOTTOM: f64 = 50.0;

/// Bar colour of a contender (by name), the same in every chart.
fn color(name: &str) -> &'static str {
    match name {
        "direct" => "#9e9e9e",
        "dermaga" => "#1f6fb2",
        "nginx" => "#3a9a4a",
        "haproxy" => "#e0861a",
        _ => "#7b5ea7",
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A "nice" tick step (1, 2, 2.5 or 5 × a power of ten) for about five ticks up to `max`.
fn step(max: f64) -> f64 {
    let raw = (max / 5.0).max(f64::MIN_POSITIVE);
    let mag = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .into_iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag)
}

/// Short number for labels: 3 significant digits, thousands as `k`.
pub fn short(x: f64) -> String {
    let a = x.abs();
    if a >= 10_000.0 {
        format!("{:.0}k", x / 1000.0)
    } else if a >= 1000.0 {
        format!("{:.1}k", x / 1000.0)
    } else if a >= 100.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

/// An axis label for `v` on a scale with ticks every `step`.
fn tick(v: f64, step: f64) -> String {
    if step >= 1000.0 {
        short(v)
    } else if step >= 1.0 {
        format!("{v:.0}")
    } else {
        let decimals = (-step.log10().floor()) as usize
            + usize::from(step * 10f64.powi(-step.log10().floor() as i32) % 1.0 != 0.0);
        format!("{v:.decimals$}")
    }
}

/// One chart: `groups` of (label, one optional statistic per name in `series`).
pub fn bar_chart(
    title: &str,
    unit: &str,
    series: &[&str],
    groups: &[(String, Vec<Option<Stat>>)],
) -> String {
    let top_value = groups
        .iter()
        .flat_map(|(_, v)| v.iter().flatten().map(|s| s.max.max(s.median)))
        .fold(0.0f64, f64::max);
    let step = step(if top_value > 0.0 {
        top_value * 1.08
    } else {
        1.0
    });
    let ymax = (top_value * 1.08 / step).ceil().max(1.0) * step;
    let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
    let y = |v: f64| TOP + ph - v / ymax * ph;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">
<rect width="{W}" height="{H}" fill="white"/>
<text x="{LEFT}" y="22" font-size="15" font-weight="bold">{}</text>
<text x="14" y="{}" transform="rotate(-90 14 {})" text-anchor="middle">{}</text>
"#,
        esc(title),
        TOP + ph / 2.0,
        TOP + ph / 2.0,
        esc(unit)
    );
    let mut v = 0.0;
    while v <= ymax + step / 2.0 {
        let yy = y(v);
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" x2="{}" y1="{yy:.1}" y2="{yy:.1}" stroke="#e4e4e4"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            W - RIGHT,
            LEFT - 6.0,
            yy + 4.0,
            tick(v, step)
        );
        v += step;
    }
    let mut lx = LEFT;
    for name in series {
        let _ = writeln!(
            s,
            r#"<rect x="{lx}" y="34" width="12" height="12" fill="{}"/><text x="{}" y="44">{}</text>"#,
            color(name),
            lx + 16.0,
            esc(name)
        );
        lx += 30.0 + 8.0 * name.len() as f64;
    }
    let gw = pw / groups.len().max(1) as f64;
    let bw = gw * 0.8 / series.len().max(1) as f64;
    for (g, (label, stats)) in groups.iter().enumerate() {
        let gx = LEFT + g as f64 * gw + gw * 0.1;
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
            LEFT + (g as f64 + 0.5) * gw,
            H - BOTTOM + 20.0,
            esc(label)
        );
        for (i, (name, stat)) in series.iter().zip(stats).enumerate() {
            let x = gx + i as f64 * bw;
            let cx = x + bw / 2.0;
            let Some(st) = stat else {
                let _ = writeln!(
                    s,
                    r##"<text x="{cx:.1}" y="{:.1}" text-anchor="middle" fill="#888">n/a</text>"##,
                    TOP + ph - 4.0
                );
                continue;
            };
            let (ym, ylo, yhi) = (y(st.median), y(st.min), y(st.max));
            let _ = writeln!(
                s,
                r##"<rect x="{:.1}" y="{ym:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{}: median {} (min {} – max {})</title></rect>
<line x1="{cx:.1}" x2="{cx:.1}" y1="{ylo:.1}" y2="{yhi:.1}" stroke="#222"/><line x1="{:.1}" x2="{:.1}" y1="{ylo:.1}" y2="{ylo:.1}" stroke="#222"/><line x1="{:.1}" x2="{:.1}" y1="{yhi:.1}" y2="{yhi:.1}" stroke="#222"/>
<text x="{cx:.1}" y="{:.1}" text-anchor="middle" font-size="11">{}</text>"##,
                x + 1.0,
                (bw - 2.0).max(1.0),
                (TOP + ph - ym).max(0.0),
                color(name),
                esc(name),
                short(st.median),
                short(st.min),
                short(st.max),
                cx - bw / 6.0,
                cx + bw / 6.0,
                cx - bw / 6.0,
                cx + bw / 6.0,
                yhi.min(ym) - 4.0,
                short(st.median)
            );
        }
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_nice() {
        assert_eq!(step(10.0), 2.0);
        assert_eq!(step(23.0), 5.0);
        assert_eq!(step(120_000.0), 25_000.0);
        assert_eq!(tick(75.0, 25.0), "75");
        assert_eq!(tick(0.5, 0.5), "0.5");
        assert_eq!(tick(0.75, 0.25), "0.75");
        assert_eq!(tick(50_000.0, 10_000.0), "50k");
    }

    #[test]
    fn chart_has_a_bar_per_value_and_na_for_missing() {
        let st = |m: f64| {
            Some(Stat {
                median: m,
                min: m * 0.9,
                max: m * 1.1,
                n: 3,
            })
        };
        let svg = bar_chart(
            "Throughput <1 & 4>",
            "Gbit/s",
            &["direct", "haproxy"],
            &[
                ("1 stream".into(), vec![st(20.0), None]),
                ("4 streams".into(), vec![st(30.0), st(12.0)]),
            ],
        );
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert_eq!(svg.matches("<title>").count(), 3);
        assert_eq!(svg.matches(">n/a<").count(), 1);
        assert!(svg.contains("Throughput &lt;1 &amp; 4&gt;"));
    }
}
