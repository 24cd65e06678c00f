"""The studies: does a set drawn from a teacher's lower-probability plausible tokens retrain a model as well
as ordinary samples or real text of the same size? Two of them, one entry point (`python -m studies`):

    python -m studies sweep ...             the sweep: a dose-response over alpha, models trained from scratch
                                            on each set (sweep.py; make study -> results/study)
    python -m studies retrain ...           the seed's regime: a pretrained base continued on each set
                                            (retrain.py; make study-retrain, make study-gpt2 -> results/study-retrain)
    python -m studies report sweep|retrain  redraw a study's tables from the JSON it wrote (--results_dir DIR)

What they share: where they measure (evaluations.py: the dev-test / held-out cut of the test split, the
training runs), the progress display (progress.py), the statistics over seeds (stats.py), the count
baselines (ngram.py), what a training set holds (sets.py) and the plots (plots.py). Everything here builds
on the package (gpt2/) and the data (data/); nothing of it is part of either.
"""
