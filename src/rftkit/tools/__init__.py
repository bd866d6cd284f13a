"""Tools around training, for small data: screen (which prompts carry signal), regrade (re-score a run's
stored completions with edited graders), seeds (one config over several training seeds)."""
