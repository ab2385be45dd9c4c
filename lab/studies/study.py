"""What reproduce.py asks of a study: one object, STUDY, in every study file; `link`, which
lets a study train in a scratch out-dir beside the real runs; and `own_world`, for a study
whose world is not the default one."""
import json
import os

from data.prepare import prepare


def link(out_dir, folder, names):
    """Make `folder` an out-dir that shares these runs of `out_dir` (symbolic links), so
    that what is trained in `folder` never overwrites a run of `out_dir`."""
    os.makedirs(folder, exist_ok=True)
    for name in names:
        try:
            os.symlink(os.path.abspath(os.path.join(out_dir, name)), os.path.join(folder, name))
        except FileExistsError:        # made before, or just now by another worker (--jobs)
            pass


def own_world(out_dir, settings):
    """Make {out_dir}/world with these prepare.py settings, unless a world made with them is there."""
    try:
        with open(os.path.join(out_dir, "world", "meta.json")) as f:
            made = json.load(f)["settings"]
    except (OSError, ValueError, KeyError):
        made = {}
    if any(made.get(k) != v for k, v in settings.items()):
        print(f"generating this study's own world in {out_dir}/world ({settings})")
        prepare(out_dir, **settings)


class Study:
    """A study's runs, summary, tables and figures. Subclasses fill in what they need."""
    folder = None            # results/<folder>/
    train_flags = ()         # train.py flags of every run: --align, --no-preamble
    takes_domain = False     # whether reproduce.py's --domain chooses its finetune domain

    def results_folder(self, args):
        """The folder under results/ that this command writes."""
        return self.folder

    def configure(self, args, p):
        """Check and complete the command line; p.error() on what this study cannot take."""
        if args.methods:
            p.error(f"the {args.study} study has no --methods to choose from")

    def runs_per_seed(self, args):
        """How many progress-bar ticks one seed makes."""
        raise NotImplementedError

    def run_seed(self, seed, sweep, bar):
        """Train (or reuse), measure and sweep.record() everything of one seed."""
        raise NotImplementedError

    def finish(self, sweep):
        """Anything measured once after every seed (the cost benchmark), as summary entries."""
        return {}

    def summarize(self, rows, args):
        """The summary's own entries (reproduce.py adds the command, commit, machine, ...)."""
        raise NotImplementedError

    def markdown(self, summary):
        raise NotImplementedError

    def figures(self, summary, folder, plt):
        pass

    def headline(self, summary):
        """What the command prints at its end."""
        return ""
