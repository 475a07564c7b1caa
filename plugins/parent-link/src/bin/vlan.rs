//! The `vlan` CNI plugin.
fn main() {
    cni::skel::run(parent_link::ParentLink(parent_link::Kind::Vlan))
}
