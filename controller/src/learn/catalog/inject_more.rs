//! The fault families added for issue 16: failures the literature and real
//! maintainer scripts name, as postinst fragments (see the catalog's
//! `[families]` table for each one's source). `m` is the magnitude.

use super::Family;

/// The fragment that injects `f`; empty for the families inject.rs makes.
pub(super) fn fragment(f: Family, m: u32) -> String {
    match f {
        // Leaks: descriptors pile up until the process limit (EMFILE).
        Family::FdLeak => format!(
            "perl -e 'my @f; while (1) {{ open(my $h, \"<\", \"/etc/hostname\") or die \"postinst: too many open files\\n\"; push @f, $h; select(undef,undef,undef,0.002/{m}) }}' || exit 1\n"
        ),
        // Storms: workers started and never reaped, then a give-up.
        Family::ForkStorm => format!(
            "i=0; while [ $i -lt {n} ]; do sleep 60 & i=$((i+1)); sleep 0.01; done\necho 'postinst: too many workers' >&2\nexit 1\n",
            n = 150 * m
        ),
        // Fills: one file growing until the disk is full.
        Family::LogFlood => "while :; do head -c 32768 /dev/zero >> /var/log/backstop-demo.log || { echo 'postinst: cannot write the log' >&2; exit 1; }; sleep 0.01; done\n".into(),
        Family::UserConflict => "useradd --system --uid 1 --no-create-home backstop-demo || { echo 'postinst: cannot create the system user' >&2; exit 1; }\n".into(),
        Family::AlternativesConflict => "update-alternatives --install /usr/bin/backstop-demo backstop-demo /usr/lib/backstop-demo/missing 50 || exit 1\n".into(),
        Family::PromptHang => "rm -f /run/backstop-demo.answer; mkfifo /run/backstop-demo.answer; read answer < /run/backstop-demo.answer\n".into(),
        Family::DataFormat => format!(
            "mkdir -p /var/lib/backstop-demo; seq 1 {n} > /var/lib/backstop-demo/data\nawk 'END {{ print \"postinst: unknown record format at line \" NR > \"/dev/stderr\"; exit 1 }}' /var/lib/backstop-demo/data || exit 1\n",
            n = 200_000 * m
        ),
        _ => String::new(),
    }
}
