"""PPO agents on slots, pixels or ground-truth states: ``train_ppo.py`` trains, ``evaluate.py`` scores.

Both are scripts (``python agents/train_ppo.py --help``) and importable modules (``agents.train_ppo.train``,
``agents.evaluate.evaluate``) once the project is installed (``make install``).
"""
