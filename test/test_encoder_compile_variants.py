"""benchmarks/repro/encoder_compile_variants.py's command line (its runs need a GPU)."""

from benchmarks.repro import encoder_compile_variants as variants


def test_command_line_runs_each_variant_against_the_first(monkeypatch, tmp_path):
    calls = []

    def run(model, name, ref, compress=None, out_csv=None):
        calls.append((model, name, ref, compress, out_csv))
        return f"{model}-{name}"

    monkeypatch.setattr(variants, "run", run)
    out = str(tmp_path / "rows.csv")
    variants.main(["vit_h,vit_b", "cdt,cdt_no_deferral", "float8_dynamic_quant", "--out", out])
    compress = "float8_dynamic_quant"
    assert calls == [
        ("vit_h", "cdt", None, compress, out),
        ("vit_h", "cdt_no_deferral", "vit_h-cdt", compress, out),
        ("vit_b", "cdt", None, compress, out),
        ("vit_b", "cdt_no_deferral", "vit_b-cdt", compress, out),
    ]


def test_rows_carry_the_environment_columns():
    assert {"gpu_name", "torch_version", "triton_version", "torchao_version"} <= set(
        variants.SCHEMA.columns
    )
    assert set(variants.SCHEMA.keys) < set(variants.SCHEMA.columns)
