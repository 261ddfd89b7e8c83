"""BlazePose detector and landmark engines: keypoints, masks and world landmarks per person.

    from engines.pose import PoseEstimator, PersonObservation
    est = PoseEstimator(backend="auto", device="cpu", max_people=4)
    people = est(image)      # image (H, W, 3) uint8 RGB; tracks regions across calls
    est.reset()              # new video
"""

from engines.pose.estimator import PersonObservation, PoseEstimator

__all__ = ["PoseEstimator", "PersonObservation"]
