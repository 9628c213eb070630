//! The committed man page must match what build.rs generates from the CLI.
//! `UPDATE_GOLDEN=1 cargo test --test man_page` refreshes it.

#[test]
fn committed_man_page_is_fresh() {
    let generated = include_str!(concat!(env!("OUT_DIR"), "/vfioctl.8"));
    let committed_path = concat!(env!("CARGO_MANIFEST_DIR"), "/man/vfioctl.8");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(committed_path, generated).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(committed_path).unwrap_or_default();
    assert!(
        committed == generated,
        "man/vfioctl.8 is stale: run `UPDATE_GOLDEN=1 cargo test --test man_page` and commit it"
    );
    for section in [
        ".SH NAME",
        ".SH SYNOPSIS",
        ".SH COMMANDS",
        ".SH \"EXIT STATUS\"",
        ".SH FILES",
        ".SH EXAMPLES",
        ".SH \"JSON OUTPUT\"",
    ] {
        assert!(generated.contains(section), "man page lacks {section}");
    }
}
