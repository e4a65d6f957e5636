//! Stand-in for Telepresence's helper processes (port-forward, ssh, sshfs) in integration
//! tests: ignores its arguments and sleeps until it is killed; it never exits on its own.

fn main() {
    loop {
        std::thread::park();
    }
}
