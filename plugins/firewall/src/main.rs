//! The `firewall` CNI plugin.
fn main() {
    cni::skel::run(firewall::Firewall)
}
