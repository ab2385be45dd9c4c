"""
The lab's door: run a study of lab/studies/ on 3 seeds and write results/<study>/.

    python reproduce.py                 # the main study
    python reproduce.py --list          # every study, one line each
    python reproduce.py extended        # one by name

Everything behind this door (the study engine, the studies, the tables and
figures, the speed benchmark) lives in lab/; the textbook's files never import
it. lab/engine.py says how a study runs.
"""
from lab.engine import main

if __name__ == "__main__":
    main()
