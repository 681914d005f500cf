//! The command line's spellings of the library's choices. The library has no clap in it (as it
//! has no terminal); each option here mirrors a library enum and converts at the edge.

/// A `clap::ValueEnum` mirroring a library enum variant for variant, with its conversion.
macro_rules! mirror {
    ($(#[$em:meta])* $arg:ident => $lib:path {
        $($(#[$vm:meta])* $v:ident),* $(,)?
    }) => {
        $(#[$em])*
        #[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
        pub enum $arg {
            $($(#[$vm])* $v),*
        }
        impl From<$arg> for $lib {
            fn from(a: $arg) -> Self {
                type Lib = $lib;
                match a {
                    $($arg::$v => Lib::$v),*
                }
            }
        }
    };
}

mirror!(SideArg => lorascope::spectral::Side { Left, Right });

mirror!(PrecisionArg => lorascope::engine::Precision { F32, F64 });

mirror!(RuleArg => lorascope::spectral::rule::RuleKind {
    /// The paper's: c_j is the best |cos| with a single base vector.
    Paper,
    /// An extension: c_j is the best projection onto a cluster of base vectors with nearly
    /// equal σ, so a rotation inside a near-degenerate base subspace is no intruder.
    DegenerateAware,
});

mirror!(ReportFormatArg => lorascope::report::ReportFormat { Md, Html, Json, Csv });

mirror!(ScopeArg => lorascope::repair::Scope {
    /// The highest-ranked intruder only, as the paper scales them.
    Top,
    /// Every intruder among the top k, as PEFT's `reduce_intruder_dimension` does.
    All,
});

mirror!(RepairFormatArg => lorascope::repair::Format {
    /// A PEFT LoRA adapter folder whose merge equals the merged repair exactly.
    Adapter,
    /// The whole model: a folder from_pretrained loads, or one .safetensors file.
    Merged,
});

mirror!(ColorArg => lorascope::tui::theme::ColorChoice {
    Auto,
    Truecolor,
    #[value(name = "256")]
    Ansi256,
    #[value(name = "16")]
    Ansi16,
    Never,
});
