//! The report: figures as rows (median, range, ratio, target), printed as a
//! table and optionally written as JSON.

use crate::util::{Machine, Stats};
use std::fmt::Write as _;

/// A target from the issue, evaluated on one row.
#[derive(Debug, Clone)]
pub struct Target {
    /// What is required, e.g. `<= 3x floor`.
    pub text: String,
    /// `None` when it could not be evaluated (a baseline was skipped).
    pub pass: Option<bool>,
}

/// A ratio against a baseline.
#[derive(Debug, Clone)]
pub struct Ratio {
    pub value: f64,
    /// What it is relative to, e.g. `vs floor`.
    pub against: String,
}

/// One measured (or skipped) line of the table.
#[derive(Debug, Clone)]
pub struct Row {
    pub figure: u8,
    pub name: String,
    pub unit: &'static str,
    /// `None`: skipped or failed; `note` says why.
    pub stats: Option<Stats>,
    pub ratio: Option<Ratio>,
    pub target: Option<Target>,
    pub note: String,
}

impl Row {
    pub fn new(
        figure: u8,
        name: impl Into<String>,
        unit: &'static str,
        stats: Option<Stats>,
    ) -> Row {
        Row {
            figure,
            name: name.into(),
            unit,
            stats,
            ratio: None,
            target: None,
            note: String::new(),
        }
    }

    pub fn skipped(
        figure: u8,
        name: impl Into<String>,
        unit: &'static str,
        why: impl Into<String>,
    ) -> Row {
        let mut row = Row::new(figure, name, unit, None);
        row.note = why.into();
        row
    }

    pub fn median(&self) -> Option<f64> {
        self.stats.map(|s| s.median)
    }

    pub fn with_note(mut self, note: impl Into<String>) -> Row {
        self.note = note.into();
        self
    }

    /// Sets the ratio `self / other` (or `other / self` with `invert`).
    pub fn ratio_to(mut self, other: Option<f64>, invert: bool, against: &str) -> Row {
        if let (Some(mine), Some(theirs)) = (self.median(), other) {
            let value = if invert { theirs / mine } else { mine / theirs };
            if value.is_finite() {
                self.ratio = Some(Ratio {
                    value,
                    against: against.to_owned(),
                });
            }
        }
        self
    }

    /// A target on the ratio: `>= min` or `<= max`.
    pub fn target_ratio(mut self, at_least: bool, bound: f64, text: &str) -> Row {
        let pass = self.ratio.as_ref().map(|r| {
            if at_least {
                r.value >= bound
            } else {
                r.value <= bound
            }
        });
        self.target = Some(Target {
            text: text.to_owned(),
            pass,
        });
        self
    }

    /// A target on the median itself.
    pub fn target_value(mut self, at_least: bool, bound: f64, text: &str) -> Row {
        let pass = self
            .median()
            .map(|v| if at_least { v >= bound } else { v <= bound });
        self.target = Some(Target {
            text: text.to_owned(),
            pass,
        });
        self
    }

    /// A target decided elsewhere.
    pub fn target(mut self, pass: Option<bool>, text: &str) -> Row {
        self.target = Some(Target {
            text: text.to_owned(),
            pass,
        });
        self
    }
}

pub const FIGURES: [&str; 9] = [
    "One-shot `true`, new connection each time (latency)",
    "Commands per second over one persistent connection",
    "Throughput through the client binary into a pipe",
    "1,000 clients at once, each running `echo` (new connection each)",
    "Server memory",
    "Cost as the output grows (Unix socket, fresh server per size)",
    "Fleets: `true` on many loopback hosts from one client",
    "Ansible playbook (integrations/ansible/test/playbook.yml), 3 loopback hosts: rsh against ssh",
    "Terminal sessions (-tt): keystroke round trip, output through the pty",
];

pub struct Report {
    pub machine: Machine,
    pub quick: bool,
    pub revision: Option<String>,
    pub rows: Vec<Row>,
    pub notes: Vec<String>,
}

fn format_value(value: f64, unit: &str) -> String {
    match unit {
        "ms" if value < 10.0 => format!("{value:.2}"),
        "ms" | "cmd/s" | "MB/s" | "KiB" => format!("{value:.0}"),
        "s" => format!("{value:.2}"),
        "KiB/conn" => format!("{value:.1}"),
        _ => format!("{value:.0}"),
    }
}

fn status(target: &Option<Target>) -> &'static str {
    match target {
        None => "",
        Some(Target {
            pass: Some(true), ..
        }) => "PASS",
        Some(Target {
            pass: Some(false), ..
        }) => "FAIL",
        Some(Target { pass: None, .. }) => "n/a",
    }
}

impl Report {
    pub fn render(&self) -> String {
        let mut out = String::new();
        let m = &self.machine;
        let _ = writeln!(
            out,
            "machine: {} core(s), {}, {:.1} GiB RAM, Linux {}",
            m.cores, m.cpu, m.memory_gib, m.kernel
        );
        let _ = writeln!(
            out,
            "openssh: {}",
            m.openssh.as_deref().unwrap_or("not installed")
        );
        let _ = writeln!(
            out,
            "rsh: git {}",
            self.revision.as_deref().unwrap_or("unknown")
        );
        let _ = writeln!(
            out,
            "mode: {}",
            if self.quick {
                "--quick (small N and sizes: indicative only)"
            } else {
                "full"
            }
        );
        for note in &self.notes {
            let _ = writeln!(out, "note: {note}");
        }
        let name_width = self
            .rows
            .iter()
            .map(|r| r.name.len())
            .max()
            .unwrap_or(10)
            .max(10);
        for (index, title) in FIGURES.iter().enumerate() {
            let figure = u8::try_from(index + 1).unwrap_or(u8::MAX);
            let rows: Vec<&Row> = self.rows.iter().filter(|r| r.figure == figure).collect();
            if rows.is_empty() {
                continue;
            }
            let _ = writeln!(out, "\n{figure}. {title}");
            let _ = writeln!(
                out,
                "  {:<name_width$} {:>9} {:<8} {:>19} {:>4} {:>17} {:>14} {:>6}",
                "what", "median", "unit", "min..max", "runs", "ratio", "target", "status"
            );
            for row in rows {
                let (median, range, runs) = match row.stats {
                    Some(s) => (
                        format_value(s.median, row.unit),
                        format!(
                            "{}..{}",
                            format_value(s.min, row.unit),
                            format_value(s.max, row.unit)
                        ),
                        s.runs.to_string(),
                    ),
                    None => ("-".to_owned(), String::new(), String::new()),
                };
                let ratio = row
                    .ratio
                    .as_ref()
                    .map(|r| format!("{:.2}x {}", r.value, r.against))
                    .unwrap_or_default();
                let target = row
                    .target
                    .as_ref()
                    .map(|t| t.text.clone())
                    .unwrap_or_default();
                let _ = write!(
                    out,
                    "  {:<name_width$} {:>9} {:<8} {:>19} {:>4} {:>17} {:>14} {:>6}",
                    row.name,
                    median,
                    row.unit,
                    range,
                    runs,
                    ratio,
                    target,
                    status(&row.target)
                );
                if !row.note.is_empty() {
                    let _ = write!(out, "  {}", row.note);
                }
                out.push('\n');
            }
        }
        let targets: Vec<&Row> = self.rows.iter().filter(|r| r.target.is_some()).collect();
        if !targets.is_empty() {
            let _ = writeln!(out, "\nTargets");
            for row in targets {
                let measured = match (&row.ratio, row.stats) {
                    (Some(r), _) => format!("{:.2}x {}", r.value, r.against),
                    (None, Some(s)) => format!("{} {}", format_value(s.median, row.unit), row.unit),
                    (None, None) => "not measured".to_owned(),
                };
                let text = row.target.as_ref().map(|t| t.text.as_str()).unwrap_or("");
                let _ = writeln!(
                    out,
                    "  {:<4}  {}. {}: {} (target {})",
                    status(&row.target),
                    row.figure,
                    row.name,
                    measured,
                    text
                );
            }
        }
        out
    }

    pub fn json(&self) -> String {
        let m = &self.machine;
        let mut out = String::from("{\n");
        let _ = writeln!(
            out,
            "  \"machine\": {{\"cpu\": {}, \"cores\": {}, \"memory_gib\": {:.1}, \"kernel\": {}, \"openssh\": {}}},",
            quote(&m.cpu),
            m.cores,
            m.memory_gib,
            quote(&m.kernel),
            m.openssh.as_deref().map_or("null".to_owned(), quote)
        );
        let _ = writeln!(out, "  \"quick\": {},", self.quick);
        let _ = writeln!(
            out,
            "  \"revision\": {},",
            self.revision.as_deref().map_or("null".to_owned(), quote)
        );
        let notes: Vec<String> = self.notes.iter().map(|n| quote(n)).collect();
        let _ = writeln!(out, "  \"notes\": [{}],", notes.join(", "));
        out.push_str("  \"rows\": [\n");
        let rows: Vec<String> = self
            .rows
            .iter()
            .map(|row| {
                let mut fields = vec![
                    format!("\"figure\": {}", row.figure),
                    format!("\"name\": {}", quote(&row.name)),
                    format!("\"unit\": {}", quote(row.unit)),
                ];
                match row.stats {
                    Some(s) => {
                        fields.push(format!("\"median\": {}", number(s.median)));
                        fields.push(format!("\"min\": {}", number(s.min)));
                        fields.push(format!("\"max\": {}", number(s.max)));
                        fields.push(format!("\"runs\": {}", s.runs));
                    }
                    None => fields.push("\"median\": null".to_owned()),
                }
                if let Some(r) = &row.ratio {
                    fields.push(format!("\"ratio\": {}", number(r.value)));
                    fields.push(format!("\"ratio_against\": {}", quote(&r.against)));
                }
                if let Some(t) = &row.target {
                    fields.push(format!("\"target\": {}", quote(&t.text)));
                    fields.push(format!(
                        "\"pass\": {}",
                        t.pass.map_or("null".to_owned(), |p| p.to_string())
                    ));
                }
                if !row.note.is_empty() {
                    fields.push(format!("\"note\": {}", quote(&row.note)));
                }
                format!("    {{{}}}", fields.join(", "))
            })
            .collect();
        out.push_str(&rows.join(",\n"));
        out.push_str("\n  ]\n}\n");
        out
    }
}

fn number(value: f64) -> String {
    if value.is_finite() {
        format!("{value}")
    } else {
        "null".to_owned()
    }
}

fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
