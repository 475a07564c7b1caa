//! The `loopback` CNI plugin.
fn main() {
    cni::skel::run(loopback::Loopback)
}
