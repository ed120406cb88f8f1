//! The summary tables the bench prints: a row per figure, a column per backend, and the
//! target.

use crate::database::BackendName;

/// A table being built over `reports`, one column per report.
pub(crate) struct Table<'a, R> {
    reports: &'a [R],
    columns: Vec<&'static str>,
    /// A label, a value per column, the target; section rows have no values.
    rows: Vec<(String, Vec<String>, String)>,
}

impl<'a, R> Table<'a, R> {
    /// A table with a column per report, named by the report's backend.
    pub(crate) fn new(reports: &'a [R], backend: impl Fn(&R) -> BackendName) -> Self {
        Table {
            reports,
            columns: reports.iter().map(|r| backend(r).as_str()).collect(),
            rows: Vec::new(),
        }
    }

    /// A table with a column per report, named by `columns` (one per report).
    pub(crate) fn with_columns(reports: &'a [R], columns: Vec<&'static str>) -> Self {
        Table {
            reports,
            columns,
            rows: Vec::new(),
        }
    }

    /// A heading row.
    pub(crate) fn section(&mut self, title: String) {
        self.rows.push((title, Vec::new(), String::new()));
    }

    /// A figure: its label, its target (or "") and its value in each column.
    pub(crate) fn row(&mut self, label: &str, target: &str, value: impl Fn(&R) -> String) {
        let values = self.reports.iter().map(value).collect();
        self.rows.push((format!("  {label}"), values, target.to_owned()));
    }

    /// A figure of a part that `pick` finds in a column's report, or "-" where it was not
    /// measured.
    pub(crate) fn row_of<T>(
        &mut self,
        label: &str,
        target: &str,
        pick: impl Fn(&R) -> Option<&T>,
        value: impl Fn(&T) -> String,
    ) {
        self.row(label, target, |r| pick(r).map_or("-".into(), &value));
    }

    /// Prints the table: a header of the columns, then each row.
    pub(crate) fn print(&self) {
        let label_width = self.rows.iter().map(|r| r.0.chars().count()).max().unwrap_or(0);
        let value_width = self
            .rows
            .iter()
            .flat_map(|r| r.1.iter().map(|v| v.chars().count()))
            .chain(self.columns.iter().map(|c| c.chars().count()))
            .max()
            .unwrap_or(0)
            .max(8);
        println!();
        let mut header = format!("{:label_width$}", "");
        for column in &self.columns {
            header.push_str(&format!("  {column:>value_width$}"));
        }
        header.push_str("  target");
        println!("{header}");
        println!("{}", "-".repeat(header.chars().count()));
        for (label, values, target) in &self.rows {
            let mut line = format!("{label:label_width$}");
            for v in values {
                line.push_str(&format!("  {v:>value_width$}"));
            }
            if !values.is_empty() && !target.is_empty() {
                line.push_str(&format!("  {target}"));
            }
            println!("{}", line.trim_end());
        }
    }
}

/// "yes" or "no", for the rows saying whether a figure meets its target.
pub(crate) fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.into()
}
