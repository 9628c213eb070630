//! Plain-text tables for people: left-aligned columns, two spaces apart,
//! the last column unpadded so long names do not push the table wide.

#[derive(Debug, Default)]
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new<const N: usize>(headers: [&str; N]) -> Table {
        Table {
            rows: vec![headers.iter().map(|h| h.to_string()).collect()],
        }
    }

    /// Adds a row; control characters in the cells are escaped
    /// (`super::escape_controls`), so no outside string reaches the terminal raw.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(
            cells
                .into_iter()
                .map(|c| super::escape_controls(&c).into_owned())
                .collect(),
        );
    }

    pub fn render(&self, indent: &str) -> String {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let mut widths = vec![0usize; columns];
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for row in &self.rows {
            let mut line = String::from(indent);
            for (i, cell) in row.iter().enumerate() {
                if i + 1 < row.len() {
                    // Padded by hand: `format!`'s width stops at 65,535.
                    line.push_str(cell);
                    let pad = widths[i] - cell.chars().count() + 2;
                    line.extend(std::iter::repeat_n(' ', pad));
                } else {
                    line.push_str(cell);
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// `-` for an absent value, as the tables print it.
pub fn or_dash(value: Option<impl ToString>) -> String {
    value.map_or_else(|| "-".to_string(), |v| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligns_columns_and_leaves_the_last_unpadded() {
        let mut t = Table::new(["A", "BB", "NAME"]);
        t.row(vec!["xxx".into(), "y".into(), "long name".into()]);
        t.row(vec!["z".into(), "".into(), "".into()]);
        assert_eq!(t.render(""), "A    BB  NAME\nxxx  y   long name\nz\n");
        assert_eq!(or_dash(None::<u32>), "-");
        assert_eq!(or_dash(Some(4)), "4");
    }

    #[test]
    fn cells_wider_than_a_format_width_do_not_panic() {
        let mut t = Table::new(["A", "B"]);
        let wide = "x".repeat(70_000);
        t.row(vec![wide.clone(), "y".into()]);
        t.row(vec!["z\x1b]0;owned\x07".into(), "w".into()]);
        let text = t.render("");
        assert!(text.contains(&format!("{wide}  y\n")));
        assert!(!text.contains('\x1b'));
        assert!(text.contains("z\\u{1b}]0;owned\\u{7}"));
    }
}
