"""The learning engine, free of pytest: the Q-learner, the state encoder, the reward
calculator, the hyperparameters, each test's outcome history and the metrics (APFD & co.).

The agents (:mod:`pytest_qlearn.agents`) are built from these parts; the plugin, the replay
harness and the CLI all drive the same code.
"""
