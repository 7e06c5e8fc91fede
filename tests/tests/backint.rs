//! The BACKINT program (`hdbbackint`) driven by `hana-driver`, a fake HANA
//! that makes FIFOs, feeds and drains them and checks every line and byte,
//! against a live mover.

use std::process::Command;

use shmover_client::ClientKind;
use shmover_tests::MoverProcess;

#[test]
fn hdbbackint_passes_every_fake_hana_scenario() {
    let m = MoverProcess::start(&[]);
    let out =
        Command::new(shmover_tools::workspace_binary("hana-driver").expect("hana-driver is built"))
            .arg("--hdbbackint")
            .arg(shmover_tools::workspace_binary("hdbbackint").expect("hdbbackint is built"))
            .arg("--socket")
            .arg(&m.socket)
            .env_remove("MOVER_SOCKET")
            .output()
            .expect("run hana-driver");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let last = text
        .lines()
        .rfind(|l| l.contains(" passed, "))
        .unwrap_or("");
    assert!(
        out.status.success() && last.ends_with(" 0 failed"),
        "{text}"
    );
    let passed: u32 = last.split(' ').next().unwrap().parse().unwrap();
    assert!(passed >= 40, "{last}");
    // The driver deleted everything it made: the namespace is empty.
    let mut c = m.client(ClientKind::Backint);
    assert!(c.list("", 0).unwrap().is_empty());
}
