//! What the benchmark prints: a JSON object per scenario as it finishes, then one table.

use serde_json::Value;

/// A figure with its target: met when `value` is on the right side of `bound`.
pub struct Row {
    pub figure: String,
    pub skein: String,
    pub peer: String,
    pub ratio: String,
    pub target: String,
    pub met: Option<bool>,
}

impl Row {
    /// A figure with no peer beside it, and its target with whether it is met, if it has one.
    pub fn alone(figure: String, skein: String, target: Option<(String, bool)>) -> Self {
        let (target, met) = match target {
            Some((target, met)) => (target, Some(met)),
            None => ("-".into(), None),
        };
        Self {
            figure,
            skein,
            peer: "-".into(),
            ratio: "-".into(),
            target,
            met,
        }
    }
}

impl Row {
    /// Skein's figure beside the floor's (`floor.rs`): how far from the machine's limit.
    pub fn against_floor(
        figure: String,
        (skein, floor): (f64, f64),
        show: fn(f64) -> String,
    ) -> Self {
        Self {
            figure: format!("{figure}, against the floor"),
            skein: show(skein),
            peer: format!("{} (floor)", show(floor)),
            ratio: ratio(skein, Some(floor)),
            target: "-".into(),
            met: None,
        }
    }
}

#[derive(Default)]
pub struct Report {
    rows: Vec<Row>,
}

impl Report {
    /// Prints a scenario's figures as one line of JSON.
    pub fn scenario(&self, name: &str, mut figures: Value) {
        figures["scenario"] = name.into();
        println!("{figures}");
    }

    pub fn row(&mut self, row: Row) {
        self.rows.push(row);
    }

    pub fn print_table(&self) {
        let header = ["figure", "skein", "peer", "skein ÷ peer", "target", "met"];
        let cells: Vec<[String; 6]> = self
            .rows
            .iter()
            .map(|row| {
                let met = match row.met {
                    Some(true) => "yes",
                    Some(false) => "NO",
                    None => "-",
                };
                [
                    row.figure.clone(),
                    row.skein.clone(),
                    row.peer.clone(),
                    row.ratio.clone(),
                    row.target.clone(),
                    met.to_owned(),
                ]
            })
            .collect();
        let widths: Vec<usize> = (0..header.len())
            .map(|i| {
                cells
                    .iter()
                    .map(|row| row[i].chars().count())
                    .chain([header[i].chars().count()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |row: &[String]| {
            let padded: Vec<String> = row
                .iter()
                .zip(&widths)
                .map(|(cell, width)| format!("{cell:<width$}"))
                .collect();
            format!("| {} |", padded.join(" | "))
        };
        println!();
        println!("{}", line(&header.map(String::from)));
        let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
        println!("{}", line(&rule));
        for row in &cells {
            println!("{}", line(row));
        }
    }
}

/// The median of `values` (which it sorts); 0 when empty.
pub fn median(values: &mut [f64]) -> f64 {
    percentile_f(values, 50.0)
}

/// The `p`th percentile of `values` (which it sorts), nearest rank; 0 when empty.
pub fn percentile_f(values: &mut [f64], p: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * values.len() as f64).ceil() as usize;
    values[rank.clamp(1, values.len()) - 1]
}

/// Nanoseconds to milliseconds, for printing.
pub fn ms(nanos: f64) -> f64 {
    (nanos / 1e6 * 1000.0).round() / 1000.0
}

/// Bytes to KiB, to two decimal places, for printing.
pub fn kib(bytes: f64) -> f64 {
    (bytes / 1024.0 * 100.0).round() / 100.0
}

/// A ratio to two significant places, or "-" without a peer figure.
pub fn ratio(skein: f64, peer: Option<f64>) -> String {
    match peer {
        Some(peer) if peer > 0.0 => format!("{:.2}×", skein / peer),
        _ => "-".into(),
    }
}
