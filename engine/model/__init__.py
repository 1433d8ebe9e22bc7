"""The PyMAF network (torch): backbone, feature pyramid, mesh alignment feedback, regressors."""
