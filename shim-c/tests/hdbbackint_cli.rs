//! `hdbbackint`'s command line without a mover: version, usage errors,
//! and an unreachable mover answered line by line.

use std::process::Command;

const EXE: &str = env!("CARGO_BIN_EXE_hdbbackint");

#[test]
fn v_and_capital_v_print_the_version_and_need_no_mover() {
    for flag in ["-v", "-V"] {
        let out = Command::new(EXE)
            .args(["-f", "backup", flag])
            .output()
            .unwrap();
        assert!(out.status.success());
        assert!(String::from_utf8_lossy(&out.stdout).starts_with("hdbbackint "));
    }
}

#[test]
fn a_missing_or_unknown_function_exits_2() {
    assert_eq!(Command::new(EXE).output().unwrap().status.code(), Some(2));
    assert_eq!(
        Command::new(EXE)
            .args(["-f", "bogus"])
            .output()
            .unwrap()
            .status
            .code(),
        Some(2)
    );
    assert_eq!(
        Command::new(EXE).arg("-f").output().unwrap().status.code(),
        Some(2)
    );
}

#[test]
fn an_unreachable_mover_answers_error_for_each_line_and_exits_1() {
    let dir = std::env::temp_dir().join(format!("hdbbackint-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let input = dir.join("in");
    let output = dir.join("out");
    std::fs::write(
        &input,
        "#SOFTWAREID \"backint 1.50\" \"x\"\n#EBID \"1\" \"/a b\"\n#EBID \"2\" \"/c\"\n",
    )
    .unwrap();
    let out = Command::new(EXE)
        .args(["-f", "delete", "-u", "SID", "-i"])
        .arg(&input)
        .arg("-o")
        .arg(&output)
        .env("MOVER_SOCKET", dir.join("nobody.sock"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = std::fs::read_to_string(&output).unwrap();
    assert_eq!(
        text,
        "#SOFTWAREID \"backint 1.50\" \"shmover hdbbackint 0.1.0\"\n#ERROR \"1\" \"/a b\"\n#ERROR \"2\" \"/c\"\n"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("not reachable"));
    std::fs::remove_dir_all(&dir).unwrap();
}
