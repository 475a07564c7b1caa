//! The `ptp` CNI plugin.
fn main() {
    cni::skel::run(ptp::Ptp)
}
