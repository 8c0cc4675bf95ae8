//! `dermaga doctor`'s output: text for people (colour on a terminal unless `NO_COLOR` is set),
//! JSON for tools.

use std::io::IsTerminal;

use serde_json::json;

use super::Report;
use super::findings::Level;

/// Whether to colour: stdout is a terminal and `NO_COLOR` is unset or empty
/// (<https://no-color.org>).
pub fn colour_wanted() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

fn label(level: Level, colour: bool) -> String {
    let (word, code) = match level {
        Level::Error => ("error", "1;31"),
        Level::Warning => ("warning", "1;33"),
        Level::Info => ("info", "1;36"),
    };
    if colour {
        format!("\x1b[{code}m{word}\x1b[0m")
    } else {
        word.to_owned()
    }
}

fn where_(report: &Report) -> String {
    match &report.namespaces {
        None => "in all namespaces".to_owned(),
        Some(n) if n.len() == 1 => format!("in namespace {}", n[0]),
        Some(n) => format!("in namespaces {}", n.join(", ")),
    }
}

fn count(report: &Report, level: Level) -> usize {
    report.findings.iter().filter(|f| f.level == level).count()
}

/// Each finding with its objects, why and fix; then the counts.
pub fn text(report: &Report, colour: bool) -> String {
    let mut out = String::new();
    for f in &report.findings {
        out.push_str(&format!(
            "{} [{}] {}\n  objects: {}\n  why: {}\n  fix: {}\n\n",
            label(f.level, colour),
            f.check,
            f.summary,
            f.objects.join(", "),
            f.why,
            f.fix
        ));
    }
    let (e, w, i) = (
        count(report, Level::Error),
        count(report, Level::Warning),
        count(report, Level::Info),
    );
    if report.findings.is_empty() {
        out.push_str(&format!("no findings {}", where_(report)));
    } else {
        out.push_str(&format!(
            "{} {}: {e} error(s), {w} warning(s), {i} info",
            report.findings.len(),
            if report.findings.len() == 1 {
                "finding"
            } else {
                "findings"
            },
        ));
        out.push_str(&format!(" {}", where_(report)));
    }
    out
}

/// One JSON object: the namespaces, the findings, the counts per level.
pub fn json(report: &Report) -> String {
    json!({
        "namespaces": report.namespaces,
        "findings": report.findings,
        "counts": {
            "error": count(report, Level::Error),
            "warning": count(report, Level::Warning),
            "info": count(report, Level::Info),
        },
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::doctor::Finding;

    fn report() -> Report {
        Report {
            namespaces: Some(vec!["shop".into()]),
            findings: vec![Finding {
                level: Level::Warning,
                check: "no-readiness-probe",
                summary: "Deployment shop/web, behind Service shop/web, has no readiness probe"
                    .into(),
                objects: vec!["Deployment shop/web".into(), "Service shop/web".into()],
                why: "why".into(),
                fix: "fix".into(),
            }],
        }
    }

    #[test]
    fn text_names_level_check_objects_why_and_fix_and_colours_only_when_asked() {
        let plain = text(&report(), false);
        assert!(plain.starts_with("warning [no-readiness-probe] Deployment shop/web"));
        assert!(plain.contains("\n  fix: fix\n"));
        assert!(plain.ends_with("1 finding: 0 error(s), 1 warning(s), 0 info in namespace shop"));
        assert!(!plain.contains('\x1b'));
        assert!(text(&report(), true).starts_with("\x1b[1;33mwarning\x1b[0m"));
        let empty = Report {
            namespaces: None,
            findings: vec![],
        };
        assert_eq!(text(&empty, false), "no findings in all namespaces");
    }

    #[test]
    fn json_carries_the_findings_and_counts() {
        let v: serde_json::Value = serde_json::from_str(&json(&report())).unwrap();
        assert_eq!(v["counts"]["warning"], 1);
        assert_eq!(v["findings"][0]["level"], "warning");
        assert_eq!(v["findings"][0]["check"], "no-readiness-probe");
    }
}
