"""Models this project adds to RecBole. ``MODELS`` maps a model name to its class; the runner
resolves these before RecBole's built-ins."""
import recbole.model.sequential_recommender  # noqa: F401  (its import turns anomaly detection on)

from recbole_psrq.compat import disable_recbole_anomaly_detection

disable_recbole_anomaly_detection()

# registers the ColdAUC / UserAUC metrics with RecBole's evaluator (before any Config is built)
import recbole_psrq.evaluation  # noqa: E402,F401
from recbole_psrq.model.floors import ContentFloor, PopularityFloor  # noqa: E402
from recbole_psrq.model.mcca import MCCA  # noqa: E402

MODELS = {"MCCA": MCCA, "PopularityFloor": PopularityFloor, "ContentFloor": ContentFloor}
