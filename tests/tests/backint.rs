//! The BACKINT program (`hdbbackint`) driven by `hana-driver`, a fake HANA
//! that makes FIFOs, feeds and drains them and checks every line and byte,
//! against a live mover.

use shmover_client::ClientKind;
use shmover_tests::drivers::{hana_driver, run_driver};
use shmover_tests::MoverProcess;

#[test]
fn hdbbackint_passes_every_fake_hana_scenario() {
    let m = MoverProcess::start(&[]);
    run_driver(hana_driver(&m.socket), 54);
    // The driver deleted everything it made: the namespace is empty.
    let mut c = m.client(ClientKind::Backint);
    assert!(c.list("", 0).unwrap().is_empty());
}
