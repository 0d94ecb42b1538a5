//! The `INET_DIAG_REQ_BYTECODE` program sent with a netlink dump request, so that the kernel
//! formats and copies only the sockets whose remote port is in a set (its walk of the hash
//! table remains).
//!
//! The program is laid out like `ss` compiles `dport = :A or dport = :B`, and meets the checks
//! of the kernel's audit (`inet_diag_bc_audit`); the tests model both the audit and the
//! interpreter.

use std::collections::BTreeSet;

/// `inet_diag_bc_op` codes (linux/inet_diag.h).
const INET_DIAG_BC_JMP: u8 = 1;
const INET_DIAG_BC_D_GE: u8 = 4;
const INET_DIAG_BC_D_LE: u8 = 5;
const INET_DIAG_BC_D_EQ: u8 = 12;
/// The size of one `inet_diag_bc_op`, and of a port comparison: the op and a second op holding
/// the port.
const BC_OP_LEN: usize = 4;
const BC_PORT_TEST_LEN: usize = 2 * BC_OP_LEN;

/// Above this many ports no filter is sent and the whole table is filtered in user space: the
/// kernel runs the program for every socket, one comparison per port, and jump offsets are
/// 16-bit. A Redis topology has a handful of ports.
const MAX_FILTER_PORTS: usize = 1024;

/// How [`port_filter`] compares a socket's remote port with one of the ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PortMatch {
    /// One `INET_DIAG_BC_D_EQ`.
    Equal,
    /// `INET_DIAG_BC_D_GE` then `INET_DIAG_BC_D_LE` with the same port, for kernels without
    /// `D_EQ`.
    Range,
}

/// The `INET_DIAG_REQ_BYTECODE` program that accepts a socket whose remote port is in `ports`:
/// empty (no filter) when `ports` is empty or holds more than [`MAX_FILTER_PORTS`].
///
/// The kernel's interpreter (`inet_diag_bc_run` in net/ipv4/inet_diag.c) walks a sequence of
/// 4-byte `struct inet_diag_bc_op { u8 code; u8 yes; u16 no; }` (host byte order). Each op
/// tests the socket and moves forward by `yes` bytes if the test holds, by `no` bytes if not;
/// the socket is accepted if this lands exactly on the end of the program, rejected if it
/// lands past it. A port comparison (`D_EQ`, `D_GE`, `D_LE`) is followed by a second op whose
/// `no` holds the port, compared with `ntohs(inet_dport)`: the socket's remote port.
/// `INET_DIAG_BC_JMP` always takes its `no`.
///
/// The ports are tested one after the other, like `ss` compiles `dport = :A or dport = :B`
/// (`ssfilter_bytecompile` in iproute2's misc/ss.c):
///
/// ```text
/// test A: D_EQ  yes 8  no 12       a match goes on to the JMP, a mismatch to test B
///         port A (in `no`)
///         JMP   yes 4  no  →end    a match of A: jump to the end, accept
/// test B: D_EQ  yes 8  no 12       the last test: a match lands on the end (accept), a
///         port B                   mismatch 4 bytes past it (reject)
/// ```
///
/// With [`PortMatch::Range`] a test is `D_GE yes 8 no 20; port; D_LE yes 8 no 12; port`.
/// `yes` is one byte, so every accepting jump of the chain is a `JMP`'s 16-bit `no`.
///
/// The kernel checks a program before the dump (`inet_diag_bc_audit`): every `yes` at least
/// the op's length with its argument (8 for a port comparison, 4 for `JMP`), every `no` at
/// least that too and at most 4 bytes past the end, every offset a multiple of 4, every `no`
/// target inside the program an op that the chain of `yes` jumps reaches, and that chain
/// ending exactly on the end. The layout above meets all of them.
pub(super) fn port_filter(ports: &BTreeSet<u16>, how: PortMatch) -> Vec<u8> {
    if ports.is_empty() || ports.len() > MAX_FILTER_PORTS {
        return Vec::new();
    }
    let codes: &[u8] = match how {
        PortMatch::Equal => &[INET_DIAG_BC_D_EQ],
        PortMatch::Range => &[INET_DIAG_BC_D_GE, INET_DIAG_BC_D_LE],
    };
    let test_len = BC_PORT_TEST_LEN * codes.len();
    let total = ports.len() * (test_len + BC_OP_LEN) - BC_OP_LEN;
    let offset = |n: usize| u16::try_from(n).expect("MAX_FILTER_PORTS bounds the program");
    let mut program = Vec::with_capacity(total);
    let mut push_op = |code: u8, yes: u8, no: u16| {
        program.push(code);
        program.push(yes);
        program.extend_from_slice(&no.to_ne_bytes());
    };
    for (index, &port) in ports.iter().enumerate() {
        for (step, &code) in codes.iter().enumerate() {
            // A mismatch skips the rest of this test and its JMP: the next port's test, or 4
            // bytes past the end after the last one.
            let no = test_len - step * BC_PORT_TEST_LEN + BC_OP_LEN;
            push_op(code, BC_PORT_TEST_LEN as u8, offset(no));
            push_op(0, 0, port);
        }
        if index + 1 < ports.len() {
            let jmp_at = (index + 1) * (test_len + BC_OP_LEN) - BC_OP_LEN;
            push_op(INET_DIAG_BC_JMP, BC_OP_LEN as u8, offset(total - jmp_at));
        }
    }
    program
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sockets::testutil::ports;

    /// One `inet_diag_bc_op` as the kernel reads it.
    fn op(code: u8, yes: u8, no: u16) -> Vec<u8> {
        let mut bytes = vec![code, yes];
        bytes.extend_from_slice(&no.to_ne_bytes());
        bytes
    }

    #[test]
    fn port_filters_are_laid_out_like_ss_compiles_them() {
        const EQ: u8 = 12;
        const GE: u8 = 4;
        const LE: u8 = 5;
        const JMP: u8 = 1;
        /// A name, the ports, how they are compared, and the program's ops.
        type Case = (&'static str, Vec<u16>, PortMatch, Vec<Vec<u8>>);
        let cases: Vec<Case> = vec![
            (
                "one port",
                vec![6379],
                PortMatch::Equal,
                vec![op(EQ, 8, 12), op(0, 0, 6379)],
            ),
            (
                "two ports, ascending whatever the order given",
                vec![26379, 6379],
                PortMatch::Equal,
                vec![
                    op(EQ, 8, 12),
                    op(0, 0, 6379),
                    op(JMP, 4, 12),
                    op(EQ, 8, 12),
                    op(0, 0, 26379),
                ],
            ),
            (
                "four ports",
                vec![7000, 7001, 26379, 6379],
                PortMatch::Equal,
                vec![
                    op(EQ, 8, 12),
                    op(0, 0, 6379),
                    op(JMP, 4, 36),
                    op(EQ, 8, 12),
                    op(0, 0, 7000),
                    op(JMP, 4, 24),
                    op(EQ, 8, 12),
                    op(0, 0, 7001),
                    op(JMP, 4, 12),
                    op(EQ, 8, 12),
                    op(0, 0, 26379),
                ],
            ),
            (
                "one port as a range",
                vec![6379],
                PortMatch::Range,
                vec![op(GE, 8, 20), op(0, 0, 6379), op(LE, 8, 12), op(0, 0, 6379)],
            ),
            (
                "three ports as ranges",
                vec![1, 65535, 6379],
                PortMatch::Range,
                vec![
                    op(GE, 8, 20),
                    op(0, 0, 1),
                    op(LE, 8, 12),
                    op(0, 0, 1),
                    op(JMP, 4, 40),
                    op(GE, 8, 20),
                    op(0, 0, 6379),
                    op(LE, 8, 12),
                    op(0, 0, 6379),
                    op(JMP, 4, 20),
                    op(GE, 8, 20),
                    op(0, 0, 65535),
                    op(LE, 8, 12),
                    op(0, 0, 65535),
                ],
            ),
            ("no port: no filter", vec![], PortMatch::Equal, vec![]),
        ];
        for (name, list, how, want) in cases {
            assert_eq!(
                port_filter(&ports(&list), how),
                want.concat(),
                "case: {name}"
            );
        }
        let too_many: BTreeSet<u16> = (1..=u16::try_from(MAX_FILTER_PORTS + 1).unwrap()).collect();
        assert!(port_filter(&too_many, PortMatch::Equal).is_empty());
        let most: BTreeSet<u16> = (1..=u16::try_from(MAX_FILTER_PORTS).unwrap()).collect();
        assert_eq!(
            port_filter(&most, PortMatch::Range).len(),
            MAX_FILTER_PORTS * 20 - 4
        );
    }

    /// `inet_diag_bc_audit` (net/ipv4/inet_diag.c), for the codes `port_filter` uses: whether
    /// the kernel accepts `program`.
    fn kernel_audit(program: &[u8]) -> bool {
        let at = |offset: usize| -> (u8, usize, usize) {
            let op = &program[offset..offset + 4];
            (
                op[0],
                usize::from(op[1]),
                usize::from(u16::from_ne_bytes([op[2], op[3]])),
            )
        };
        // valid_cc: whether an op starts `cc` bytes before the end, on the chain of yes jumps.
        let valid_cc = |cc: usize| {
            let (mut offset, mut len) = (0usize, program.len() as isize);
            while len >= 0 {
                if cc as isize > len {
                    return false;
                }
                if cc as isize == len {
                    return true;
                }
                let (_, yes, _) = at(offset);
                if yes < 4 || yes % 4 != 0 {
                    return false;
                }
                len -= yes as isize;
                offset += yes;
            }
            false
        };
        if program.len() < 4 {
            return false;
        }
        let (mut offset, mut len) = (0usize, program.len() as isize);
        while len > 0 {
            let (code, yes, no) = at(offset);
            let min_len = match code {
                INET_DIAG_BC_D_EQ | INET_DIAG_BC_D_GE | INET_DIAG_BC_D_LE => {
                    if len < 8 {
                        return false;
                    }
                    8
                }
                INET_DIAG_BC_JMP => 4,
                _ => return false,
            };
            if no < min_len || no as isize > len + 4 || no % 4 != 0 {
                return false;
            }
            if (no as isize) < len && !valid_cc((len - no as isize) as usize) {
                return false;
            }
            if yes < min_len || yes as isize > len + 4 || yes % 4 != 0 {
                return false;
            }
            offset += yes;
            len -= yes as isize;
        }
        len == 0
    }

    /// `inet_diag_bc_run` (net/ipv4/inet_diag.c) for a socket whose remote port is `dport`.
    fn kernel_run(program: &[u8], dport: u16) -> bool {
        let (mut offset, mut len) = (0usize, program.len() as isize);
        while len > 0 {
            let op = &program[offset..offset + 4];
            let argument = || u16::from_ne_bytes([program[offset + 6], program[offset + 7]]);
            let yes = match op[0] {
                INET_DIAG_BC_JMP => false,
                INET_DIAG_BC_D_EQ => dport == argument(),
                INET_DIAG_BC_D_GE => dport >= argument(),
                INET_DIAG_BC_D_LE => dport <= argument(),
                code => panic!("unexpected code {code}"),
            };
            let step = if yes {
                usize::from(op[1])
            } else {
                usize::from(u16::from_ne_bytes([op[2], op[3]]))
            };
            offset += step;
            len -= step as isize;
        }
        len == 0
    }

    #[test]
    fn port_filters_pass_the_kernels_audit_and_accept_exactly_their_ports() {
        let sets: Vec<BTreeSet<u16>> = vec![
            ports(&[6379]),
            ports(&[6379, 26379]),
            ports(&[1, 6379, 6380, 26379, 65535]),
            (7000..7040).collect(),
            (1..=u16::try_from(MAX_FILTER_PORTS).unwrap())
                .map(|p| p * 60)
                .collect(),
        ];
        let probes: Vec<u16> = [0, 1, 2, 59, 60, 61, 6378, 6379, 6380, 6381, 26379]
            .into_iter()
            .chain(6990..7050)
            .chain([61_439, 61_440, 61_441, 65_534, 65_535])
            .collect();
        for set in &sets {
            for how in [PortMatch::Equal, PortMatch::Range] {
                let program = port_filter(set, how);
                assert!(kernel_audit(&program), "{how:?} {set:?}: refused");
                for set_port in set.iter().copied().chain(probes.iter().copied()) {
                    assert_eq!(
                        kernel_run(&program, set_port),
                        set.contains(&set_port),
                        "{how:?}, port {set_port}, set of {}",
                        set.len()
                    );
                }
            }
        }
        // The audit model refuses what the kernel refuses.
        let mut bad_yes = port_filter(&ports(&[6379]), PortMatch::Equal);
        bad_yes[1] = 4;
        assert!(!kernel_audit(&bad_yes));
        let mut bad_no = port_filter(&ports(&[6379, 6380]), PortMatch::Equal);
        bad_no[2..4].copy_from_slice(&6u16.to_ne_bytes());
        assert!(!kernel_audit(&bad_no));
    }
}
