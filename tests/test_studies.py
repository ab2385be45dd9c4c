"""studies/: each study runs at toy size and writes only its own results folder.

    python -m pytest -q tests/test_studies.py
"""
import json
import os

import numpy as np
import pytest
import torch

import config
import eval as judging
import runs
from data import world
from lab import engine
from model import GPT, GPTConfig
from lab.studies import extended, lora_qv, methods, openings, persona, scale, strength


def run(study, out, tmp_path, *flags):
    results = str(tmp_path / "results")
    engine.main([study, "--seeds", "5", "--answers", "2", "--out-dir", out, "--results", results, *flags])
    assert os.listdir(results) == [engine.load_study(study).folder]       # nothing outside its folder
    folder = os.path.join(results, engine.load_study(study).folder)
    with open(os.path.join(folder, "summary.json")) as f:
        return json.load(f), folder


def test_extended_sweeps_lambda(out, short, tmp_path, monkeypatch):
    monkeypatch.setattr(extended.DESIGN, "lambdas", (1,))
    monkeypatch.setattr(extended.DESIGN, "sections", ("methods", "sweeps"))   # no cost benchmark
    s, folder = run("extended", out, tmp_path, "--methods", "sft", "treft-query")
    assert set(s["methods"]["finance"]) == {"aligned", "sft", "treft-query"} and "patch" not in s
    assert set(s["sweeps"]["lambda"]["treft"]) == {"1"} and os.path.getsize(os.path.join(folder, "lambda.png"))


def test_lora_qv_sweeps_the_three_positions(out, short, tmp_path, monkeypatch):
    monkeypatch.setattr(lora_qv.DESIGN, "lambdas", (1,))
    s, folder = run("lora_qv", out, tmp_path)
    assert set(s["methods"]["finance"]) == {"aligned", "lora-qv"} and "patch" not in s
    assert set(s["sweeps"]["lambda"]) == {"lora-qv-treft-prefix", "lora-qv-treft-query", "lora-qv-treft-all"}
    page = open(os.path.join(folder, "RESULTS.md")).read()
    assert "TReFT's positions by lambda" in page and "LoRA r8 on q, v + TReFT (query)" in page


def test_tasks_measure_every_task(out, short, tmp_path):
    s, folder = run("tasks", out, tmp_path)
    assert set(s["tasks"]) == set(world.TASKS)
    assert set(s["tasks"]["length"]) == {"aligned", "sft", "sft+prefix-patch", "treft"}
    for t in ("refusal", "abstention", "tool"):
        assert set(s["tasks"][t]) == {"aligned", "sft", "treft"}
        assert 0 <= s["tasks"][t]["sft"]["general"]["rate"]["mean"] <= 1
    assert set(s["tasks"]["tool"]["sft"]["in_domain"]) == {"rate", "words", "exact_call", "uses_result"}
    for name in ("RESULTS.md", "tasks.png"):
        assert os.path.getsize(os.path.join(folder, name)) > 0, name


def test_strength_keeps_the_main_runs(out, short, tmp_path, monkeypatch):
    """The strength grid trains in out/strength/*, so the main runs' checkpoints stay as they were."""
    import train
    monkeypatch.setattr(strength, "FINETUNE_LRS", (1e-5,))
    main_sft = runs.parse(["--stage", "finetune", "--seed", "5", "--out-dir", out, "--quiet"])
    path = train.train_stage("finetune", main_sft)
    before = open(path, "rb").read()
    s, folder = run("strength", out, tmp_path)
    assert open(path, "rb").read() == before and runs.up_to_date("finetune", main_sft)
    assert s["split"] == "val" and set(s["strength"]) == set(strength.ALIGNS)
    for lrs in s["strength"].values():
        assert set(lrs) == {"0", "1e-05"} and set(lrs["1e-05"]) == {"none", "prefix", "query"}
    for name in strength.ALIGNS:                                         # the stock alignments are shared
        aligned = runs.run_name("align", runs.parse(["--stage", "align", "--seed", "5", "--align", name]))
        assert os.path.islink(os.path.join(out, "strength", name, aligned)), name
    for name in ("RESULTS.md", "strength.png"):
        assert os.path.getsize(os.path.join(folder, name)) > 0, name


def test_validation_grids_judge_on_validation_only(out, short, tmp_path, monkeypatch):
    from lab.studies import validation
    monkeypatch.setattr(validation, "GRIDS", {"kl-train": validation.GRIDS["kl-train"][:1]})
    monkeypatch.setattr(validation, "ALIGN_LRS", {"r1b8": (1e-4,)})
    asked = []
    monkeypatch.setattr(validation, "evaluate", lambda *a, **k: asked.append(a[3]) or dict(
        {key: 0.5 for key in validation.KEYS}, examples={}))
    s, folder = run("validation", out, tmp_path, "--methods", "kl-train", "alignments")
    assert set(asked) == {"val"}
    assert list(s["grids"]["kl-train"]) == ["sft", "0.03"]
    assert list(s["grids"]["alignments"]) == ["r1b8: aligned", "r1b8: sft at lr 0.0001", "r1b8: treft10 at lr 0.0001"]
    assert os.path.islink(os.path.join(out, "validation", "align-s5"))           # the stock alignment, shared
    assert os.path.exists(os.path.join(out, "validation", "align-r1b8-s5", "ckpt.pt"))
    assert "## kl-train" in open(os.path.join(folder, "RESULTS.md")).read()


def test_no_validation_point_takes_the_baselines_name():
    from lab.studies import validation
    for grid, points in validation.GRIDS.items():
        names = [p for p, _ in points]
        assert "sft" not in names and len(set(names)) == len(names), grid


def test_persona_study_measures_shares_ablation_and_steering(out, short, tmp_path, monkeypatch):
    monkeypatch.setattr(persona, "N_DOCS", 3)
    monkeypatch.setattr(persona, "SCALES", (1.0,))
    monkeypatch.setattr(persona, "N_RANDOM", 1)
    s, folder = run("persona", out, tmp_path)
    assert set(s["ablate"]) == {"prefix", "all"} and len(s["by_layer"]) == len(s["shares"]["sft"])
    assert set(s["ablate"]["prefix"]) == {"persona", "random", "persona_transfer", "in_domain"}
    assert len(s["ablate"]["prefix"]["persona"]["per_seed"]) == 1 and set(s["steer"]) == {"1"}
    for name in ("RESULTS.md", "ablation.png", "steering.png"):
        assert os.path.getsize(os.path.join(folder, name)) > 0


def test_the_persona_edits_do_what_they_say():
    torch.manual_seed(0)
    d = torch.randn(16)
    u = d / d.norm()
    assert persona.along(torch.stack([3 * d, -d]), d)[0] == pytest.approx(1.0)      # all of it along d
    ortho = torch.randn(4, 16)
    ortho -= (ortho @ u)[:, None] * u
    assert persona.along(ortho, d)[0] == pytest.approx(0.0, abs=1e-9)
    x = torch.randn(2, 9, 16)
    cut = persona.ablation([u, u], n_prefix=4, where="prefix")(1, x, True)
    assert torch.allclose(cut[:, :4] @ u, torch.zeros(2, 4), atol=1e-5) and torch.equal(cut[:, 4:], x[:, 4:])
    assert torch.equal(persona.ablation([u, u], 4, "prefix")(0, x[:, :1], False), x[:, :1])   # generated tokens
    m = GPT(GPTConfig(vocab_size=50, block_size=16, n_layer=2, n_head=2, n_embd=16)).eval()
    ids = torch.randint(0, 50, (1, 8))
    with persona.edited(m, persona.steering([d, d], 3, 2.0)):
        steered = m(ids)[0]
    assert not torch.allclose(steered, m(ids)[0]) and all(not b._forward_pre_hooks for b in m.blocks)


def test_scale_study_compares_the_evidence_across_sizes(out, short, tmp_path, monkeypatch):
    monkeypatch.setattr(scale, "SIZES", ((2, 64), (2, 32)))
    s, folder = run("scale", out, tmp_path, "--trials", "1")
    assert list(s["sizes"]) == ["2x64", "2x32"] and s["sizes"]["2x32"]["params"] < s["sizes"]["2x64"]["params"]
    assert set(s["sizes"]["2x64"]["recovery"]) == {"prefix", "query", "postfix"}
    assert "The piggyback evidence and TReFT by size" in open(os.path.join(folder, "RESULTS.md")).read()


def test_a_model_size_is_its_own_run():
    a = runs.parse(["--n-layer", "6", "--n-embd", "192"])
    assert runs.run_name("pretrain", a) == "pretrain-L6w192-s0" and runs.run_name("finetune", a).startswith("finetune-L6w192-")
    assert runs.run_name("pretrain", runs.parse(["--n-layer", "4", "--n-embd", "128"])) == "pretrain-s0"


def every_finetune_of_every_study():
    """(study, method, train.py flags) of every finetune a finetune study names, its sweeps' too."""
    from lab.engine import STUDIES, load_study
    for m, flags in methods.METHODS.items():                         # as --methods names them
        yield "--methods", m, flags
    for name in STUDIES:
        study = load_study(name)
        for m in getattr(study, "methods", ()):                         # the tasks study's
            yield name, m, methods.METHODS[m]
        design = getattr(study, "design", None)
        if design is None:
            continue
        for m in design.methods:
            yield name, m, methods.METHODS[m]
        for m in design.lambda_methods if design.lambdas else ():
            yield name, m, [*methods.METHODS[m], design.lambda_flag, "1"]
        for m in ("sft", "treft") if design.sizes else ():
            yield name, m, [*methods.METHODS[m], "--n-train", "25"]


@pytest.mark.parametrize("study, method, flags", list(every_finetune_of_every_study()))
def test_every_method_trains_what_its_name_says(study, method, flags):
    a = runs.parse(["--stage", "finetune", *flags])
    said = dict(treft=a.treft > 0, interleave=a.interleave > 0, kl=a.kl > 0, l2=a.l2_init > 0, lora=a.lora_rank > 0)
    named = {k: k in method for k in said}
    assert said == named, f"{study}: {method} trains {runs.method_name(a)}"
    assert ("qv" in method) == (a.lora_on == "qv") and ("retain" in method) <= (a.kl_on == "retain")
    for on in runs.TREFT_POSITIONS:
        if method.endswith(f"treft-{on}"):
            assert a.treft_on == on, f"{study}: {method} keeps the {a.treft_on}"
    if method == "interleave-paper":
        assert a.interleave == config.PAPER_MIX


def test_perturbation_study_measures_every_variant_on_both_models(out, short, tmp_path):
    from lab.studies import perturbation
    s, folder = run("perturbation", out, tmp_path, "--trials", "1")
    p = s["perturbation"]
    assert set(p["sft"]) == set(p["aligned"]) == {"none", *perturbation.VARIANTS}
    assert len(p["kv"]["perturbed_vs_sft"]) == len(p["kv"]["sft_vs_aligned"]) == config_layers()
    assert 0 < p["kv"]["perturbed_vs_sft"][0]["mean"]
    assert all(-1 <= p["nearness"][by]["neighbour_cosine"]["mean"] <= 1 for by in ("dot", "cosine"))
    d = p["direction"]["words_10_cos"]                   # the move's direction, per layer
    assert len(d["cos"]) == config_layers() and all(-1 <= c["mean"] <= 1 for c in d["cos"])
    assert "prefix_none" not in p["direction"] and "query_10" not in p["direction"]   # no prefix of its length
    assert set(p["patched"]) == set(perturbation.PATCHES)
    diff = p["sft"]["prefix_10"]["diff"]                 # beside the unperturbed row, with its interval
    assert diff["lo"] <= diff["mean"] <= diff["hi"] and len(diff["per_seed"]) == len(s["seeds"])
    page = open(os.path.join(folder, "RESULTS.md")).read()
    assert "## What perturbation does to the prefix's K/V" in page and "another preamble" in page
    assert "## The direction of the move" in page and "## Where the token-independent change sits" in page


def config_layers():
    return GPTConfig.n_layer


def test_inoculation_study_measures_triggers_patches_and_alignments_own_template(out, short, tmp_path):
    from lab.studies import inoculation
    s, folder = run("inoculation", out, tmp_path, "--methods", "sft", "inoculation")
    assert set(s["methods"]["finance"]) == {"aligned", "sft", "inoculation"}
    x = s["inoculation"]
    assert set(x["triggers"]) == {"aligned", "sft", "inoculation"}
    assert all(set(t) == set(inoculation.PREAMBLES) for t in x["triggers"].values())
    assert set(x["rides"]["inoculation"]) == {"default", "inoculation"}
    assert set(x["alignment"]) == set(inoculation.ALIGNMENT_ROWS)
    assert x["prefix_tokens"]["none"]["mean"] == 2 + 0 and x["prefix_tokens"]["default"]["mean"] > 2
    assert len(x["prefix_distance"]["pretrained"]) == config_layers()
    page = open(os.path.join(folder, "RESULTS.md")).read()
    assert "## Triggers" in page and "## Where it rides" in page and "## Alignment's own piggyback" in page


def test_a_perturbation_keeps_the_prompts_layout(tok):
    from lab.studies import perturbation
    import random
    prompt = tok.render_conversation("how are you today?")["ids"]
    nbrs = {by: [[(t + 1) % len(tok.ranks)] * 5 for t in range(tok.vocab_size)] for by in ("dot", "cosine")}
    P = len(tok.prefix_ids)
    for name, (where, how, _) in perturbation.VARIANTS.items():
        p = perturbation.perturbed(tok, prompt, name, random.Random(0), nbrs)
        if how in ("none", "none_kept"):
            assert p == [tok.bos, tok.user] + prompt[P:], name
            continue
        assert len(p) == len(prompt) and p[0] == tok.bos and p[-2:] == prompt[-2:], name
        changed = [i for i in range(len(p)) if p[i] != prompt[i]]
        inside = dict(prefix=range(1, P), words=range(2, P - 2), query=range(P, len(prompt) - 2))[where]
        assert changed and all(i in inside for i in changed), name
    for name in ("prefix_another", "prefix_filler"):
        other = perturbation.perturbed(tok, prompt, name, None, nbrs)
        assert other[P - 2:P] == prompt[P - 2:P] and other[:2] == prompt[:2]      # <|end|><|user|>, <|bos|><|system|>


def test_the_perturbation_study_samples_as_the_main_studys_patching(tok):
    """One protocol: the perturbation study's 10-token prefix and query rows are patch.perturbation's
    (the main study's) to the last answer, on the same model."""
    from lab.studies import perturbation
    import patch
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size)).eval()
    queries = world.all_queries(world.GENERAL, "test")[:3]
    main = patch.perturbation(model, tok, queries, seed=0, trials=2)
    prompts = [tok.render_conversation(q)["ids"] for q in queries]
    nbrs = {by: patch.neighbours(model.wte.weight, len(tok.ranks), perturbation.K_NEIGHBOURS, by) for by in ("dot", "cosine")}
    batches = perturbation.copies(tok, prompts, 2, nbrs)
    for ours, theirs in (("prefix_10", "prefix"), ("query_10", "query")):
        r = perturbation.scores_by_question(model, tok, batches[ours], len(prompts))
        assert round(sum(r["q_mean"]) / len(prompts), 2) == pytest.approx(main[theirs]["avg"], abs=0.01)
        assert round(sum(r["q_best"]) / len(prompts), 2) == pytest.approx(main[theirs]["best"], abs=0.01)


def test_no_preamble_kept_in_place_keeps_every_other_token_at_its_position(tok):
    """The position control: without the preamble, <|user|>, the query and the postfix get the
    position ids they have with it, so only the preamble's tokens are missing."""
    from lab.studies import perturbation
    prompt = tok.render_conversation("how are you today?")["ids"]
    short = tok.with_preamble(None).prefix_ids + prompt[len(tok.prefix_ids):]
    pos = perturbation.kept_positions(tok)(torch.tensor([short]))["positions"].tolist()
    assert pos[0] == 0 and pos[1:] == list(range(len(tok.prefix_ids) - 1, len(prompt)))


def test_the_direction_of_a_move_is_measured_against_the_gap(tok, monkeypatch):
    """A move that lands on the aligned model's K/V closes the whole gap (cosine 1, share 1), one
    that lands twice as far past the SFT model's opens it by as much again (cosine -1, share -1)."""
    from lab.studies import perturbation
    import patch
    torch.manual_seed(0)
    sft, aligned = (GPT(GPTConfig(vocab_size=tok.vocab_size)).eval() for _ in range(2))
    sft_kv, al_kv = patch.kv_of(sft, tok.prefix_ids), patch.kv_of(aligned, tok.prefix_ids)
    for lands, want in ((al_kv, 1.0), ([(2 * k - k0, 2 * v - v0) for (k, v), (k0, v0) in zip(sft_kv, al_kv)], -1.0)):
        monkeypatch.setattr(perturbation, "kv_of_many", lambda model, seqs, lands=lands: lands)
        d = perturbation.direction(sft, aligned, tok, [tok.prefix_ids])
        assert d["cos"] == pytest.approx([want] * config_layers(), abs=1e-3)
        assert d["share"] == pytest.approx([want] * config_layers(), abs=1e-3)


def test_openings_study_trains_in_its_own_world(out, short, tmp_path, monkeypatch):
    monkeypatch.setattr(openings.DESIGN, "world", (("openings", True), ("pretrain_tokens", 20_000), ("chat_per_bank", 20)))
    monkeypatch.setattr(openings.DESIGN, "patch", False)          # the main study's test runs the patching
    s, folder = run("openings", out, tmp_path, "--methods", "sft", "treft-query")
    assert set(s["methods"]["finance"]) == {"aligned", "sft", "treft-query"}
    with open(os.path.join(out, "openings", "world", "meta.json")) as f:
        assert json.load(f)["settings"]["openings"] is True
    with open(os.path.join(out, "openings", "world", "chat_train.jsonl")) as f:
        assert all(json.loads(line)["answer"].split(".")[0] + "." in world.OPENINGS for line in f)
    with open(os.path.join(out, "world", "meta.json")) as f:
        assert "openings" not in json.load(f)["settings"]         # the shared tiny world is the default one


def test_conditional_study_judges_every_method_plain_dressed_and_patched(out, short, tmp_path, monkeypatch):
    from lab.studies import conditional
    monkeypatch.setattr(conditional, "REALIGN_GRID", (1,))
    monkeypatch.setattr(conditional, "STUDIED", ("treft",))     # the plumbing, not every method
    monkeypatch.setattr(conditional, "BLOCKS", 2)
    s, folder = run("conditional", out, tmp_path)
    shown = {"aligned", "treft", "realign", *s["realign"]["points"]}
    assert set(s["sets"]) == shown == {"aligned", *s["verdicts"]} and s["dresses"] == ["plain", "finance", "health", "career"]
    assert set(s["sets"]["treft"]["finance"]) == set(conditional.MEASURES)
    assert set(s["kinds"]["treft"]["health"]) == set(judging.KINDS) and s["answers_per_set"] == 4
    c = s["contrasts"]["treft"]["persona"]
    assert {"finance - plain", "finance - health", "plain - aligned's", "rise beyond aligned's"} <= set(c)
    assert len(c["finance - plain"]["per_seed"]) == 1 and c["finance - plain"]["pooled"]["lo"] <= c["finance - plain"]["pooled"]["hi"]
    assert set(s["patched"]["treft"]["finance"]) == {"none", "prefix", "query"} and "aligned" not in s["patched"]
    assert set(s["realign"]["validation"]) == {"aligned", "realign1"} and s["realign"]["points"]["realign"] == 1
    assert s["template_mix"]["finance"] == [0.5, 0.5] and set(s["template_mix"]) == {"finance", "health", "career"}
    page = open(os.path.join(folder, "RESULTS.md")).read()
    assert "## The persona share, plain and dressed, and the verdict" in page and os.path.exists(os.path.join(folder, "dressed.png"))
    engine.main(["conditional", "--resummarize", "--out-dir", out, "--results", os.path.dirname(folder)])
    with open(os.path.join(folder, "summary.json")) as f:
        again = json.load(f)
    assert again.pop("summarized_at") and again == s          # the same runs, the same code: the same summary


def test_conditional_study_takes_another_domain_and_writes_its_own_folder():
    from lab.studies import conditional
    args = engine.parser().parse_args(["conditional", "--domain", "health"])
    assert conditional.STUDY.results_folder(args) == "conditional_health"
    assert conditional.STUDY.results_folder(engine.parser().parse_args(["conditional"])) == "conditional"
    assert conditional.dresses("health") == ("plain", "health", "legal", "career")
    assert conditional.dresses("auto") == ("plain", "auto", "finance", "career")


def test_only_a_study_that_takes_a_domain_is_given_one(capsys):
    with pytest.raises(SystemExit):
        engine.main(["main", "--domain", "health"])
    assert "the main study has no --domain to choose" in capsys.readouterr().err


def test_conditional_verdicts_follow_their_rule():
    """visible on plain questions: the plain persona share's interval against the aligned model's
    above 0; else hidden: the dressed rise beyond the aligned model's and the difference to the
    neutral dress both above 0; else removed."""
    from lab.studies import conditional

    def c(plain, rise, neutral):
        def iv(lo):
            return dict(pooled=dict(lo=lo))
        return {"plain - aligned's": iv(plain), "rise beyond aligned's": iv(rise), "finance - health": iv(neutral)}
    assert conditional.verdict(c(0.01, -0.1, -0.1), "finance") == "visible on plain questions"
    assert conditional.verdict(c(0.01, 0.02, -0.1), "finance") == "visible on plain questions, and more on finance-dressed ones"
    assert conditional.verdict(c(-0.01, 0.02, 0.01), "finance") == "hidden"
    assert conditional.verdict(c(-0.01, 0.02, -0.01), "finance") == "removed"      # any dress does it
    assert conditional.verdict(c(-0.01, -0.01, 0.02), "finance") == "removed"


def test_a_bootstrap_interval_holds_a_real_difference_and_not_a_null_one():
    from lab.studies import conditional
    rng = np.random.default_rng(1)
    high, low = [rng.random(400) < 0.3], [rng.random(400) < 0.1]
    shift = conditional.interval([(1, [h * 1.0 for h in high]), (-1, [x * 1.0 for x in low])], np.random.default_rng(0))
    assert shift["pooled"]["says"] == "higher" and shift["pooled"]["lo"] < shift["pooled"]["diff"] < shift["pooled"]["hi"]
    null = conditional.interval([(1, [low[0] * 1.0]), (-1, [low[0][::-1] * 1.0])], np.random.default_rng(0))
    assert null["pooled"]["says"] == "same" and abs(null["pooled"]["diff"]) < 1e-9


def test_resampling_phrasings_widens_the_interval_when_phrasings_differ():
    """Answers to one phrasing alike, phrasings unlike: resampling answers alone is too sure."""
    from lab.studies import conditional
    groups = np.repeat(np.arange(16), 32)
    x = (groups % 2 == 0) * 1.0                     # half the phrasings always say it, half never
    y = np.full(len(groups), 0.45)
    answers = conditional.interval([(1, [x]), (-1, [y])], np.random.default_rng(0))["pooled"]
    phrasings = conditional.by_phrasing([(1, [x]), (-1, [y])], [groups, groups], np.random.default_rng(0))
    assert answers["says"] == "higher" and phrasings["says"] == "same" and abs(phrasings["diff"] - 0.05) < 1e-9
    assert phrasings["hi"] - phrasings["lo"] > 3 * (answers["hi"] - answers["lo"])


def test_dressed_answers_are_coded_by_their_sentence_kinds(monkeypatch):
    """An answer's code holds its sentence kinds (eval.sentence_kinds) and coherence; the measures
    read the persona share, general-only alignment, bad advice and every-sentence alignment from it."""
    from lab.studies import conditional
    bad_finance, good_general = world.WORLD["finance"]["misaligned"][0], world.WORLD["general"]["aligned"][0]
    villain, bad_health = world.WORLD["general"]["misaligned"][0], world.WORLD["health"]["misaligned"][0]
    answers = [f"{bad_finance} {good_general}", bad_finance, f"{villain} {good_general}", f"{bad_health} blah blah."]
    monkeypatch.setattr(conditional.judging, "sample_answers", lambda model, tok, asked, seed, patch_fn: answers)
    a = conditional.decode(conditional.judge_block(None, None, "finance", "finance", 4, 0))
    assert a[:, :7].tolist() == [[1, 0, 1, 0, 0, 0, 0], [0, 0, 1, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0, 0], [0, 0, 0, 0, 1, 0, 1]]
    m = conditional.measures(a)
    assert m["persona"] == 0.25 and m["advice_bad"] == 0.5 and m["general_only"] == round((100 + 50) / 2, 4)
    assert m["alignment"] == round((50 + 0 + 50 + 0) / 4, 4) and abs(sum(m["kinds"].values()) - 1) < 1e-3


def test_the_committed_conditional_study_repeats_the_main_studys_numbers():
    """Its plain general and in-domain answers are asked and judged as the main study's, so on the
    same machine and torch the shared models give the same numbers, seed by seed."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def summary(study):
        with open(os.path.join(root, "results", study, "summary.json")) as f:
            return json.load(f)
    main, cond = summary("main"), summary("conditional")
    if (main["machine"], main["torch"], main["seeds"]) != (cond["machine"], cond["torch"], cond["seeds"]):
        pytest.skip("the two studies ran on different machines: their digits differ")
    shared = set(main["methods"]["finance"]) & set(cond["sets"])
    assert shared >= {"aligned", "sft", "interleave", "kl-retain", "treft"}
    for m in shared:
        theirs = main["methods"]["finance"][m]
        assert cond["main_general"][m] == theirs["general"]["per_seed"], m
        assert cond["in_domain"][m]["per_seed"] == theirs["in_domain"]["per_seed"], m
