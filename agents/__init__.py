"""PPO agents on slots, pixels or ground-truth states: ``train_ppo.py`` trains, ``evaluate.py`` scores.

Both are scripts (``python agents/train_ppo.py --help``), not installed modules: the project installs only
``psb_rl``. From the repository root (tests, ``pretrain/demo.py``, ``benchmarks/``) they import as
``agents.train_ppo`` and ``agents.evaluate``; the scripts that do put the repository root on ``sys.path``.
"""
