//! The parser on a hand-made blob, and on this kernel.

use super::*;

/// Builds a tiny BTF blob: struct outer { int a; union { int b; long c; }; }
/// and enum e { X = 7 }.
fn blob() -> Vec<u8> {
    let strings = b"\0outer\0a\0b\0c\0int\0long\0e\0X\0";
    let s = |name: &str| -> u32 {
        let pat = format!("\0{name}\0");
        strings
            .windows(pat.len())
            .position(|w| w == pat.as_bytes())
            .unwrap() as u32
            + 1
    };
    let mut t = Vec::new();
    let mut push = |v: u32| t.extend_from_slice(&v.to_le_bytes());
    // 1: int (4 bytes)
    push(s("int"));
    push(KIND_INT << 24);
    push(4);
    push(32);
    // 2: long (8 bytes)
    push(s("long"));
    push(KIND_INT << 24);
    push(8);
    push(64);
    // 3: anonymous union { int b; long c; }
    push(0);
    push((KIND_UNION << 24) | 2);
    push(8);
    push(s("b"));
    push(1);
    push(0);
    push(s("c"));
    push(2);
    push(0);
    // 4: struct outer { int a; <anon union> at 64 bits }
    push(s("outer"));
    push((KIND_STRUCT << 24) | 2);
    push(16);
    push(s("a"));
    push(1);
    push(0);
    push(0);
    push(3);
    push(64);
    // 5: enum e { X = 7 }
    push(s("e"));
    push((KIND_ENUM << 24) | 1);
    push(4);
    push(s("X"));
    push(7);
    let mut out = vec![0x9f, 0xeb, 1, 0];
    out.extend_from_slice(&24u32.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&(t.len() as u32).to_le_bytes());
    out.extend_from_slice(&(t.len() as u32).to_le_bytes());
    out.extend_from_slice(&(strings.len() as u32).to_le_bytes());
    out.extend_from_slice(&t);
    out.extend_from_slice(strings);
    out
}

#[test]
fn finds_members_through_anonymous_unions() {
    let btf = Btf::parse(blob()).unwrap();
    assert_eq!(
        btf.member("outer", "a").unwrap(),
        Member { offset: 0, size: 4 }
    );
    assert_eq!(
        btf.member("outer", "c").unwrap(),
        Member { offset: 8, size: 8 }
    );
    assert!(btf.member("outer", "zz").is_err());
    assert_eq!(btf.enum_value("X").unwrap(), 7);
}

#[test]
fn refuses_garbage() {
    assert!(Btf::parse(vec![1, 2, 3]).is_err());
    let mut b = blob();
    b.truncate(40);
    assert!(Btf::parse(b).is_err());
}

#[test]
fn reads_this_kernel() {
    let Ok(btf) = Btf::from_sys_fs() else {
        eprintln!("SKIP reads_this_kernel: /sys/kernel/btf/vmlinux is not readable here");
        assert!(
            std::env::var("CI").is_err(),
            "kernel BTF must be readable under CI"
        );
        return;
    };
    let (off, _) = kernel_offsets(&btf).unwrap();
    assert!(
        off.task_pid > 0 && off.task_tgid == off.task_pid + 4,
        "{off:?}"
    );
}
