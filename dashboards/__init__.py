"""meshlens dashboards: the Streamlit app and the generated Grafana dashboards."""
