//! The command line's behaviour as data: each `tests/cmd/*.toml` names a `rotor` command line,
//! its environment (a sandbox directory as ROTOR_HOME, nothing inherited) and its exit code;
//! the `.stdout` and `.stderr` files beside it hold the expected output. After an intended
//! change, regenerate them with `TRYCMD=overwrite cargo test -p rotor-cli --test cli_cases` and
//! read the difference.

#[test]
fn cli_cases() {
    trycmd::TestCases::new().case("tests/cmd/*.toml");
}
