//! The `bridge` CNI plugin.
fn main() {
    cni::skel::run(bridge::Bridge)
}
